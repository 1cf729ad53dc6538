"""Dev tool: score a trained reference model on a channel (e.g. the test channel of
make_channels.py), with the same inference code that `serve` runs.

    .venv/bin/python include/trainers/tools/evaluate.py --model MODEL_DIR --channel DIR/test
    .venv/bin/python include/trainers/tools/evaluate.py --url http://127.0.0.1:8080 \
        --channel DIR/test --problem DIR/config/problem.json

In-process (default): loads model.json/model.npz with the trainer's own `Classifier` or
`Segmenter` (chosen by model.json's "trainer"). With --url, POSTs each image's raw bytes to a
running `serve` instead. Prints one line, e.g. `test_balanced_accuracy=0.9622 ...` (imgClf)
or `test_dice=0.8123 ...` (imgSeg), and with --json a JSON object.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import io
import json
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

TRAINERS = Path(__file__).resolve().parents[1]


def load_service(model_dir: Path):
    meta = json.loads((model_dir / "model.json").read_text())
    folder = TRAINERS / meta["trainer"]
    sys.path[:0] = [str(folder), str(TRAINERS / "common")]  # the trainer's files, the shared ones
    module = importlib.import_module("model")
    cls = module.Classifier if meta["problemType"] == "imgClf" else module.Segmenter
    return cls(model_dir), meta["problemType"]


def http_service(url: str):
    class Remote:
        def predict(self, data: bytes):
            kind = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
            request = urllib.request.Request(
                url.rstrip("/") + "/invocations", data=data, headers={"Content-Type": kind}
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                body = json.loads(response.read())
            return body.get("predictions", body)

    return Remote()


def mask_of(prediction: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(prediction["mask"]))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channel", type=Path, required=True)
    parser.add_argument("--model", type=Path, help="model dir (in-process inference)")
    parser.add_argument("--url", help="base URL of a running serve (instead of --model)")
    parser.add_argument("--problem", type=Path, help="problem.json (needed with --url)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if bool(args.model) == bool(args.url):
        parser.error("give exactly one of --model and --url")
    if args.model:
        service, problem_type = load_service(args.model)
    else:
        if not args.problem:
            parser.error("--url needs --problem")
        service = http_service(args.url)
        problem_type = json.loads(args.problem.read_text())["problemType"]

    examples = [
        json.loads(line)
        for line in (args.channel / "examples.jsonl").read_text().splitlines()
        if line.strip()
    ]
    started = time.perf_counter()
    result: dict = {"examples": len(examples), "problemType": problem_type}
    if problem_type == "imgClf":
        truth, predicted = [], []
        for example in examples:
            prediction = service.predict((args.channel / example["image"]).read_bytes())
            best = max(prediction, key=lambda p: p["confidence"])
            truth.append(example["label"])
            predicted.append(best["index"])
        truth_a, predicted_a = np.array(truth), np.array(predicted)
        labels = sorted(set(truth))
        recalls = {c: float(np.mean(predicted_a[truth_a == c] == c)) for c in labels}
        result.update(
            balanced_accuracy=float(np.mean(list(recalls.values()))),
            accuracy=float(np.mean(truth_a == predicted_a)),
            recall_per_label={str(c): r for c, r in recalls.items()},
            confusion={
                f"{t}->{p}": int(np.sum((truth_a == t) & (predicted_a == p)))
                for t in labels
                for p in sorted(set(predicted) | set(labels))
            },
        )
        line = f"test_balanced_accuracy={result['balanced_accuracy']:.4f} "
        line += f"test_accuracy={result['accuracy']:.4f}"
    else:
        overlap = truth_sum = predicted_sum = 0
        per_image = []
        for example in examples:
            prediction = service.predict((args.channel / example["image"]).read_bytes())
            truth = np.asarray(Image.open(args.channel / example["mask"])) > 0
            mask = mask_of(prediction) > 0
            if mask.shape != truth.shape:
                raise SystemExit(f"predicted mask {mask.shape} != truth {truth.shape}")
            both = int(np.sum(mask & truth))
            overlap, truth_sum, predicted_sum = (
                overlap + both,
                truth_sum + int(truth.sum()),
                predicted_sum + int(mask.sum()),
            )
            if truth.any() or mask.any():
                per_image.append(2 * both / (int(truth.sum()) + int(mask.sum())))
        dice = 2 * overlap / (truth_sum + predicted_sum) if truth_sum + predicted_sum else 1.0
        result.update(
            dice=dice,
            iou=overlap / (truth_sum + predicted_sum - overlap)
            if truth_sum + predicted_sum
            else 1.0,
            mean_image_dice=float(np.mean(per_image)) if per_image else 1.0,
        )
        line = f"test_dice={dice:.4f} test_iou={result['iou']:.4f} "
        line += f"test_mean_image_dice={result['mean_image_dice']:.4f}"
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result, indent=2) if args.json else f"{line} examples={len(examples)} "
          f"seconds={result['seconds']:.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
