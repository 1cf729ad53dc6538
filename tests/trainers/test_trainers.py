"""The reference trainers (include/trainers/img_clf, img_seg) as host processes, on tiny
synthetic data: the container contract (SM_* paths, string hyperparameters, failure file, exit
codes, metric lines the platform's regexes parse), the model files, `serve` over HTTP, the
dev tools, and determinism."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TRAINERS = ROOT / "include" / "trainers"
PYTHON = sys.executable

# The platform's metricDefinitions regexes (include/configs/*_model.yaml).
BALANCED_ACCURACY = re.compile(r"val_balanced_accuracy=([0-9.]+)")
VAL_LOSS = re.compile(r"val_loss=([0-9.eE+-]+)")
DICE = re.compile(r"val_dice=([0-9.]+)")

CLF_HPS = {"epochs": "4", "image_size": "16", "batch_size": "16", "width": "8", "seed": "3"}
SEG_HPS = {"epochs": "3", "crop_size": "32", "crops_per_image": "4", "width": "8", "seed": "3"}
CLF_PROBLEM = {
    "problemType": "imgClf",
    "labels": [{"index": 0, "name": "no_blob"}, {"index": 1, "name": "blob"}],
}
SEG_PROBLEM = {"problemType": "imgSeg", "labels": [{"index": 1, "name": "disk"}]}


# --- synthetic data ----------------------------------------------------------------------


def encode(array: np.ndarray, fmt: str = "PNG", mode: str = "L") -> bytes:
    image = Image.fromarray(np.clip(array * 255, 0, 255).astype(np.uint8))
    if mode != "L":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def blob_image(rng: np.random.Generator, blob: bool, size: int = 32) -> np.ndarray:
    image = 0.2 + rng.normal(0, 0.08, (size, size))
    if blob:
        cy, cx = rng.uniform(8, size - 8, 2)
        yy, xx = np.mgrid[:size, :size]
        image += 0.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))
    return image


def disk_image(rng: np.random.Generator, disks: int, shape=(48, 48)) -> tuple:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, np.uint8)
    for _ in range(disks):
        cy, cx = rng.uniform(6, shape[0] - 6), rng.uniform(6, shape[1] - 6)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(4, 7) ** 2] = 1
    image = 0.2 + 0.5 * mask + rng.normal(0, 0.08, shape)
    return image, mask


def write_channel(directory: Path, items: list[dict], files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_bytes(data)
    (directory / "examples.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))


def clf_channel(directory: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    items, files = [], {}
    for n in range(2 * per_class):
        label = n % 2
        # a few RGB JPEGs among grayscale PNGs: every decoding path is exercised
        fmt, mode, ext = ("JPEG", "RGB", "jpg") if n % 7 == 3 else ("PNG", "L", "png")
        name = f"images/{n % 4:02d}/img{n}.{ext}"
        files[name] = encode(blob_image(rng, bool(label)), fmt, mode)
        items.append({"id": f"secret-doc-{n}", "image": name, "label": label})
    write_channel(directory, items, files)


def seg_channel(directory: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    items, files = [], {}
    for n in range(count):
        image, mask = disk_image(rng, disks=n % 4)  # n % 4 == 0: no disk at all
        files[f"images/img{n}.png"] = encode(image)
        files[f"masks/img{n}.png"] = encode(mask / 255.0)  # pixel value = label index
        items.append(
            {"id": f"secret-doc-{n}", "image": f"images/img{n}.png", "mask": f"masks/img{n}.png"}
        )
    write_channel(directory, items, files)


# --- running the trainers ----------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    model_dir: Path
    output_dir: Path

    @property
    def failure(self) -> str | None:
        file = self.output_dir / "failure"
        return file.read_text() if file.exists() else None

    def epoch_lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith("epoch=")]


def train(
    tmp: Path,
    kind: str,
    data_dir: Path,
    hps: dict | None = None,
    problem: dict | None = None,
    validation: Path | None = None,
) -> Run:
    tmp.mkdir(parents=True, exist_ok=True)
    config, model, output = tmp / "config", tmp / "model", tmp / "output"
    config.mkdir()
    (config / "hyperparameters.json").write_text(json.dumps(hps or {}))
    default_problem = CLF_PROBLEM if kind == "img_clf" else SEG_PROBLEM
    if problem != {}:  # {}: no problem.json in the config (as on SageMaker)
        (config / "problem.json").write_text(json.dumps(problem or default_problem))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SM_")},
        "SM_INPUT_CONFIG_DIR": str(config),
        "SM_CHANNEL_TRAIN": str(data_dir / "train"),
        "SM_CHANNEL_VALIDATION": str(validation or data_dir / "validation"),
        "SM_MODEL_DIR": str(model),
        "SM_OUTPUT_DIR": str(output),
        "SM_NUM_CPUS": "1",
    }
    proc = subprocess.run(
        [PYTHON, str(TRAINERS / kind / "train")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # ~10 CPU-s (mostly importing torch); the wall time is for loaded machines
        stdin=subprocess.DEVNULL,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, model, output)


@pytest.fixture(scope="module")
def clf_run(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train(tmp_path_factory.mktemp("clf-run"), "img_clf", data["clf"], CLF_HPS)


@pytest.fixture(scope="module")
def seg_run(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train(tmp_path_factory.mktemp("seg-run"), "img_seg", data["seg"], SEG_HPS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(kind: str, model_dir: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    env = {**os.environ, "SM_MODEL_DIR": str(model_dir), "SM_SERVE_PORT": str(port)}
    env["SM_NUM_CPUS"] = "1"
    proc = subprocess.Popen(
        [PYTHON, str(TRAINERS / kind / "serve")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # importing torch on a loaded machine
        while True:
            try:
                if request(url + "/ping")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "serve exited"
            assert time.monotonic() < deadline, "serve did not answer /ping in 300 s"
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def request(url: str, body: bytes | None = None, content_type: str = "image/png") -> tuple:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=10)


# --- tests -------------------------------------------------------------------------------


def test_shared_code_lives_once_in_common() -> None:
    """The contract and the PyTorch loop exist once, in common/; no trainer folder copies them
    (they would shadow the shared files), and no hand-written network is left."""
    shared = {p.name for p in (TRAINERS / "common").glob("*.py")}
    assert {"contract.py", "torch_loop.py"} <= shared
    for kind in ("img_clf", "img_seg"):
        own = {p.name for p in (TRAINERS / kind).glob("*.py")}
        assert own == {"model.py"}, own
    assert not list(TRAINERS.rglob("nn.py"))


@pytest.mark.parametrize("kind", ["img_clf", "img_seg"])
def test_layout_of_a_trainer_folder(kind: str) -> None:
    folder = TRAINERS / kind
    for script in ("train", "serve"):
        path = folder / script
        assert os.access(path, os.X_OK), f"{path} is not executable"
        assert path.read_text().startswith("#!/usr/bin/env python3\n")
    dockerfile = (folder / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}" in dockerfile
    assert 'python3 -c "import numpy, PIL, scipy, torch" || (' in dockerfile
    # the build context is include/trainers: the shared folder, then the trainer's own files
    assert f"COPY common/ /opt/program/\nCOPY {kind}/ /opt/program/\n" in dockerfile
    # a plain `pip install torch` would pull CUDA: only the CPU index
    assert "--index-url https://download.pytorch.org/whl/cpu torch" in dockerfile


def test_clf_trains_and_reports_parseable_metrics(clf_run: Run) -> None:
    assert clf_run.returncode == 0, clf_run.stdout + clf_run.stderr
    assert clf_run.failure is None
    lines = clf_run.epoch_lines()
    assert [line.split()[0] for line in lines] == [f"epoch={e}" for e in range(1, 5)]
    for line in lines:
        assert 0.0 <= float(BALANCED_ACCURACY.search(line).group(1)) <= 1.0
        assert float(VAL_LOSS.search(line).group(1)) >= 0.0
        assert re.search(r"train_loss=[0-9.]+", line)
    final = clf_run.stdout.splitlines()[-2]
    assert final.startswith("final best_epoch=")
    assert float(BALANCED_ACCURACY.search(final).group(1)) >= 0.9  # an easy synthetic task
    assert (clf_run.model_dir / "model.npz").is_file()
    meta = json.loads((clf_run.model_dir / "model.json").read_text())
    assert meta["image_size"] == 16 and meta["labels"] == CLF_PROBLEM["labels"]
    # provenance: the trainer reports its interpreter and key libraries (the platform reads it)
    env = json.loads((clf_run.model_dir / "environment.json").read_text())
    assert env["python"] == platform.python_version()
    assert env["libraries"]["torch"] == metadata.version("torch")
    assert env["libraries"]["numpy"] == metadata.version("numpy")
    assert "secret-doc" not in clf_run.stdout and "img1" not in clf_run.stdout


def test_seg_trains_and_reports_parseable_metrics(seg_run: Run) -> None:
    assert seg_run.returncode == 0, seg_run.stdout + seg_run.stderr
    lines = seg_run.epoch_lines()
    assert len(lines) == 3
    for line in lines:
        assert 0.0 <= float(DICE.search(line).group(1)) <= 1.0
        assert float(VAL_LOSS.search(line).group(1)) >= 0.0
    final = seg_run.stdout.splitlines()[-2]
    assert final.startswith("final best_epoch=")
    assert float(DICE.search(final).group(1)) >= 0.8  # bright disks on a dark background
    assert {p.name for p in seg_run.model_dir.iterdir()} == {
        "model.json",
        "model.npz",
        "environment.json",
    }
    assert "secret-doc" not in seg_run.stdout and "masks/" not in seg_run.stdout


def test_clf_serve(clf_run: Run) -> None:
    rng = np.random.default_rng(9)
    with serving("img_clf", clf_run.model_dir) as (url, proc):
        assert request(url + "/ping") == (200, {"status": "ok"})
        status, body = request(url + "/invocations", encode(blob_image(rng, True)))
        assert status == 200
        predictions = body["predictions"]
        assert [p["index"] for p in predictions] == [0, 1]
        assert sum(p["confidence"] for p in predictions) == pytest.approx(1.0)
        assert predictions[1]["confidence"] > 0.5
        # an RGB JPEG of another size
        jpeg = encode(blob_image(rng, False, size=50), "JPEG", "RGB")
        status, body = request(url + "/invocations", jpeg, "image/jpeg")
        assert status == 200 and body["predictions"][0]["confidence"] > 0.5
        batch = json.dumps({"instances": [base64.b64encode(jpeg).decode()] * 2}).encode()
        status, body = request(url + "/invocations", batch, "application/json")
        assert status == 200 and len(body["predictions"]) == 2
        assert len(body["predictions"][0]) == 2
        # a batch is one forward pass (predict_many) with the same answers as one by one
        blob = encode(blob_image(rng, True))
        mixed = [base64.b64encode(x).decode() for x in (jpeg, blob)]
        status, body = request(url + "/invocations", json.dumps({"instances": mixed}).encode(),
                               "application/json")  # fmt: skip
        single = [request(url + "/invocations", x)[1]["predictions"] for x in (jpeg, blob)]
        for got, want in zip(body["predictions"], single, strict=True):
            assert [p["confidence"] for p in got] == pytest.approx(
                [p["confidence"] for p in want], abs=1e-6
            )
        broken = json.dumps({"instances": [mixed[0], base64.b64encode(b"nope").decode()]})
        status, body = request(url + "/invocations", broken.encode(), "application/json")
        assert status == 400 and body["error"].startswith("instance 1:")
        # the optional route: Grad-CAM of the called label on the last block's grid
        ask = {"instance": mixed[1], "index": 1}
        status, body = request(url + "/explanations", json.dumps(ask).encode(), "application/json")
        assert status == 200 and body["method"] == "grad-cam" and body["index"] == 1
        assert (body["height"], body["width"]) == (1, 1)  # image_size 16: 16 / 2**4
        assert np.asarray(body["values"]).min() >= 0
        for bad in (b"{", json.dumps({"instance": mixed[1]}).encode(),
                    json.dumps({"instance": mixed[1], "index": 5}).encode()):  # fmt: skip
            assert request(url + "/explanations", bad, "application/json")[0] == 400
        assert request(url + "/invocations", b"not an image")[0] == 400
        assert request(url + "/invocations", b"")[0] == 400
        bad = json.dumps({"instances": ["%%%"]}).encode()
        assert request(url + "/invocations", bad, "application/json")[0] == 400
        assert request(url + "/invocations", b"{", "application/json")[0] == 400
        assert request(url + "/nope")[0] == 404
        assert request(url + "/nope", b"x")[0] == 404
        assert stop(proc) == 0


def test_seg_serve(seg_run: Run) -> None:
    image, _ = disk_image(np.random.default_rng(5), disks=3, shape=(40, 64))
    with serving("img_seg", seg_run.model_dir) as (url, proc):
        status, body = request(url + "/invocations", encode(image))
        assert status == 200
        assert (body["width"], body["height"]) == (64, 40)
        mask = Image.open(io.BytesIO(base64.b64decode(body["mask"])))
        assert mask.size == (64, 40) and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 1}
        assert np.asarray(mask).any()
        batch = json.dumps({"instances": [base64.b64encode(encode(image)).decode()]}).encode()
        status, body = request(url + "/invocations", batch, "application/json")
        assert status == 200 and body["predictions"][0]["width"] == 64
        assert request(url + "/invocations", b"\x89PNG garbage")[0] == 400
        # no map of its own: the optional route is not there
        ask = json.dumps({"instance": base64.b64encode(encode(image)).decode(), "index": 1})
        assert request(url + "/explanations", ask.encode(), "application/json")[0] == 404
        assert stop(proc) == 0


def test_serve_without_a_model_exits_1(tmp_path: Path) -> None:
    env = {**os.environ, "SM_MODEL_DIR": str(tmp_path), "SM_SERVE_PORT": str(free_port())}
    proc = subprocess.run(
        [PYTHON, str(TRAINERS / "img_clf" / "serve")], env=env, capture_output=True, timeout=300
    )
    assert proc.returncode == 1 and b"could not load the model" in proc.stderr


@pytest.mark.parametrize(
    ("hps", "reason"),
    [
        ({"learning_rate": "abc"}, "hyperparameter learning_rate='abc' is not a number"),
        ({"epochs": "2.5"}, "hyperparameter epochs='2.5' is not an integer"),
        ({"image_size": "0"}, "hyperparameter image_size='0' must be >= 16"),
    ],
)
def test_bad_hyperparameter_fails_with_reason(
    tmp_path: Path, data: dict[str, Path], hps: dict, reason: str
) -> None:
    run = train(tmp_path, "img_clf", data["clf"], hps)
    assert run.returncode == 1
    assert run.failure is not None and run.failure.strip() == reason
    assert not (run.model_dir / "model.npz").exists()


def test_seg_bad_hyperparameter(tmp_path: Path, data: dict[str, Path]) -> None:
    run = train(tmp_path, "img_seg", data["seg"], {"threshold": "1.5"})
    assert run.returncode == 1 and "threshold='1.5' must be <= 1" in run.failure


def test_unknown_hyperparameter_is_ignored_with_a_warning(
    tmp_path: Path, data: dict[str, Path]
) -> None:
    run = train(tmp_path, "img_clf", data["clf"], {**CLF_HPS, "epochs": "1", "colour": "blue"})
    assert run.returncode == 0, run.failure
    assert "warning: ignoring unknown hyperparameter 'colour'" in run.stdout


@pytest.mark.parametrize("kind", ["img_clf", "img_seg"])
def test_empty_or_missing_channel_fails(tmp_path: Path, data: dict[str, Path], kind: str) -> None:
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "train" / "examples.jsonl").write_text("\n")
    source = data["clf" if kind == "img_clf" else "seg"]
    run = train(tmp_path / "a", kind, empty, validation=source / "validation")
    assert run.returncode == 1 and run.failure.strip() == "channel train has no examples"
    run = train(tmp_path / "b", kind, source, validation=tmp_path / "missing")
    assert run.returncode == 1
    assert run.failure.startswith("channel validation has no examples")


def test_bad_examples_fail_without_naming_ids(tmp_path: Path, data: dict[str, Path]) -> None:
    channel = tmp_path / "bad"
    write_channel(
        channel / "train",
        [
            {"id": "secret-doc-1", "image": "a.png", "label": 0},
            {"id": "secret-doc-2", "image": "a.png", "label": 7},
        ],
        {"a.png": encode(np.zeros((8, 8)))},
    )
    run = train(tmp_path / "label", "img_clf", channel, validation=data["clf"] / "validation")
    assert run.returncode == 1
    assert run.failure.strip() == (
        "channel train line 2: label 7 is not one of the problem's label indices [0, 1]"
    )
    write_channel(
        channel / "train",
        [{"id": "secret-doc-3", "image": "b.png", "label": 0}],
        {"b.png": b"\x89PNG\r\n\x1a\n truncated"},
    )
    run = train(tmp_path / "corrupt", "img_clf", channel, validation=data["clf"] / "validation")
    assert run.returncode == 1
    assert run.failure.startswith("channel train line 1: image could not be decoded")
    write_channel(
        channel / "train",
        [{"id": "secret-doc-4", "image": "../../etc/passwd", "label": 0}],
        {},
    )
    run = train(tmp_path / "escape", "img_clf", channel, validation=data["clf"] / "validation")
    assert run.returncode == 1 and "must stay inside the channel" in run.failure
    for text in (run.failure, run.stdout):
        assert "secret-doc" not in text


def test_seg_mask_must_match_the_image(tmp_path: Path, data: dict[str, Path]) -> None:
    channel = tmp_path / "bad"
    write_channel(
        channel / "train",
        [{"id": "x", "image": "i.png", "mask": "m.png"}],
        {"i.png": encode(np.zeros((10, 12))), "m.png": encode(np.zeros((10, 10)))},
    )
    run = train(tmp_path / "run", "img_seg", channel, validation=data["seg"] / "validation")
    assert run.returncode == 1
    assert run.failure.strip() == "channel train line 1: mask is 10x10 but image is 12x10"


def test_wrong_problem_type_fails(tmp_path: Path, data: dict[str, Path]) -> None:
    run = train(tmp_path, "img_seg", data["seg"], problem=CLF_PROBLEM)
    assert run.returncode == 1
    assert run.failure.strip() == "this trainer does imgSeg, problem.json says 'imgClf'"


@pytest.mark.parametrize("kind", ["img_clf", "img_seg"])
def test_same_data_and_hyperparameters_give_the_same_model(
    tmp_path: Path, data: dict[str, Path], kind: str, clf_run: Run, seg_run: Run
) -> None:
    first = clf_run if kind == "img_clf" else seg_run
    hps = CLF_HPS if kind == "img_clf" else SEG_HPS
    again = train(tmp_path, kind, data["clf" if kind == "img_clf" else "seg"], hps)
    assert again.returncode == 0
    assert again.epoch_lines() == first.epoch_lines()
    with np.load(first.model_dir / "model.npz") as a, np.load(again.model_dir / "model.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


def test_evaluate_tool_in_process(clf_run: Run, seg_run: Run, data: dict[str, Path]) -> None:
    tool = TRAINERS / "tools" / "evaluate.py"
    for run, kind, pattern in (
        (clf_run, "clf", r"test_balanced_accuracy=([0-9.]+)"),
        (seg_run, "seg", r"test_dice=([0-9.]+)"),
    ):
        proc = subprocess.run(
            [
                PYTHON,
                str(tool),
                "--model",
                str(run.model_dir),
                "--channel",
                str(data[kind] / "validation"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert float(re.search(pattern, proc.stdout).group(1)) >= 0.8


def test_make_channels_nuclei(tmp_path: Path) -> None:
    metadata.distribution("stardist")  # installed by `make setup` (--no-deps)
    proc = subprocess.run(
        [
            PYTHON,
            str(TRAINERS / "tools" / "make_channels.py"),
            "--source",
            "nuclei",
            "--out",
            str(tmp_path),
            "--tile",
            "128",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    counts = {}
    for split in ("train", "validation", "test"):
        lines = (tmp_path / split / "examples.jsonl").read_text().splitlines()
        counts[split] = len(lines)
        example = json.loads(lines[0])
        image = Image.open(tmp_path / split / example["image"])
        mask = np.asarray(Image.open(tmp_path / split / example["mask"]))
        assert image.size == (128, 128) and image.mode == "L"
        assert set(np.unique(mask)) <= {0, 1}
    assert counts == {"train": 10, "validation": 3, "test": 3}
    assert json.loads((tmp_path / "config" / "problem.json").read_text())["problemType"] == "imgSeg"


def test_problem_json_from_the_train_channel(tmp_path: Path, data: dict[str, Path]) -> None:
    """SageMaker writes input/config itself; problem.json then comes in the train channel."""
    shutil.copytree(data["seg"] / "train", tmp_path / "data" / "train")
    validation = data["seg"] / "validation"
    missing = train(tmp_path / "missing", "img_seg", tmp_path / "data", SEG_HPS, {}, validation)
    assert missing.returncode == 1
    assert missing.failure.strip() == (
        "problem.json is missing from the input config and the train channel"
    )
    (tmp_path / "data" / "train" / "problem.json").write_text(json.dumps(SEG_PROBLEM))
    run = train(tmp_path / "run", "img_seg", tmp_path / "data", SEG_HPS, {}, validation)
    assert run.returncode == 0, run.failure
