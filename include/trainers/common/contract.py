"""The SageMaker-compatible container contract, shared by the reference trainers.

One file in include/trainers/common/, used by every trainer: on the host the `train`/`serve`
scripts put ../common on sys.path; the Dockerfiles (built with include/trainers as the context)
copy it next to the trainer's own files in /opt/program.

Import it FIRST in `train`/`serve`: it caps the BLAS/OpenMP thread pools at SM_NUM_CPUS before
NumPy (and PyTorch) are loaded. Paths come from SM_* variables with SageMaker's defaults, so the
same scripts run in a container and as host processes.
"""

from __future__ import annotations

import os

_CPUS = os.environ.get("SM_NUM_CPUS", "").strip()
if _CPUS.isdigit() and int(_CPUS) > 0:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _CPUS)

import base64  # noqa: E402
import binascii  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from http import HTTPStatus  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Protocol  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

FAILURE_LIMIT = 1000  # characters of the failure text
MAX_REQUEST_BYTES = 50 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000  # larger images are refused (decompression bombs)
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class TrainerError(Exception):
    """A failure whose message is meant for people: written as is to the failure file."""


# --- paths and logging -------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    train_dir: Path
    validation_dir: Path
    model_dir: Path
    output_dir: Path

    @classmethod
    def from_env(cls) -> Paths:
        env = os.environ.get
        return cls(
            config_dir=Path(env("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config")),
            train_dir=Path(env("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train")),
            validation_dir=Path(env("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation")),
            model_dir=Path(env("SM_MODEL_DIR", "/opt/ml/model")),
            output_dir=Path(env("SM_OUTPUT_DIR", "/opt/ml/output")),
        )


def num_cpus() -> int:
    value = os.environ.get("SM_NUM_CPUS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else (os.cpu_count() or 1)


def log(message: str) -> None:
    print(message, flush=True)


def fmt(value: float) -> str:
    """A metric value as the platform's regexes expect it: fixed-point, never nan/inf/1e-05."""
    if not math.isfinite(value):
        return "1e30" if value > 0 else "-1e30"
    return f"{value:.4f}"


# --- hyperparameters ---------------------------------------------------------------------


@dataclass(frozen=True)
class HP:
    """One hyperparameter: kind is int, float, bool or str; bounds are inclusive; a str
    hyperparameter takes one of `choices`."""

    kind: type
    default: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()


def parse_hyperparameters(raw: dict[str, Any], spec: dict[str, HP]) -> dict[str, Any]:
    """Typed values for `spec` from SageMaker's all-string dict; unknown keys are ignored with
    a warning, bad values raise TrainerError."""
    if not isinstance(raw, dict):
        raise TrainerError("hyperparameters.json must hold a JSON object")
    for key in sorted(set(raw) - set(spec)):
        log(f"warning: ignoring unknown hyperparameter {key!r}")
    values: dict[str, Any] = {}
    for name, hp in spec.items():
        text = raw.get(name, hp.default)
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            raise TrainerError(f"hyperparameter {name}={text!r} must be a string")
        text = str(text).strip()
        shown = text[:60]
        if hp.kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise TrainerError(f"hyperparameter {name}='{shown}' is not true or false")
            values[name] = text.lower() in ("true", "1", "yes")
            continue
        if hp.kind is str:
            if text.lower() not in hp.choices:
                raise TrainerError(
                    f"hyperparameter {name}='{shown}' is not one of {', '.join(hp.choices)}"
                )
            values[name] = text.lower()
            continue
        try:
            number = float(text)
        except ValueError:
            raise TrainerError(f"hyperparameter {name}='{shown}' is not a number") from None
        if not math.isfinite(number):
            raise TrainerError(f"hyperparameter {name}='{shown}' is not a finite number")
        if hp.kind is int:
            if number != int(number):
                raise TrainerError(f"hyperparameter {name}='{shown}' is not an integer")
            number = int(number)
        if hp.minimum is not None and number < hp.minimum:
            raise TrainerError(f"hyperparameter {name}='{shown}' must be >= {hp.minimum:g}")
        if hp.maximum is not None and number > hp.maximum:
            raise TrainerError(f"hyperparameter {name}='{shown}' must be <= {hp.maximum:g}")
        values[name] = number
    return values


def read_hyperparameters(paths: Paths, spec: dict[str, HP]) -> dict[str, Any]:
    file = paths.config_dir / "hyperparameters.json"
    if file.is_file():
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise TrainerError(f"hyperparameters.json is not valid JSON: {exc}") from None
    elif os.environ.get("SM_HPS"):
        try:
            raw = json.loads(os.environ["SM_HPS"])
        except ValueError as exc:
            raise TrainerError(f"SM_HPS is not valid JSON: {exc}") from None
    else:
        raw = {}
    return parse_hyperparameters(raw, spec)


# --- problem and channels ----------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    problem_type: str
    labels: list[tuple[int, str]]  # (index, name), sorted by index

    @property
    def indices(self) -> list[int]:
        return [index for index, _ in self.labels]


def read_problem(paths: Paths, expected_type: str) -> Problem:
    file = paths.config_dir / "problem.json"
    if not file.is_file():  # SageMaker fills input/config itself: the train channel carries it
        file = paths.train_dir / "problem.json"
    if not file.is_file():
        raise TrainerError("problem.json is missing from the input config and the train channel")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrainerError(f"problem.json is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TrainerError("problem.json must hold a JSON object")
    kind = data.get("problemType")
    if kind != expected_type:
        raise TrainerError(f"this trainer does {expected_type}, problem.json says {kind!r}")
    labels = data.get("labels")
    if not isinstance(labels, list) or not labels:
        raise TrainerError("problem.json has no labels")
    parsed: dict[int, str] = {}
    for item in labels:
        index = item.get("index") if isinstance(item, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 255:
            raise TrainerError(f"problem.json label {item!r} needs an integer index 0..255")
        if index in parsed:
            raise TrainerError(f"problem.json has label index {index} twice")
        parsed[index] = str(item.get("name", index))
    return Problem(kind, sorted(parsed.items()))


def _inside(channel: Path, relative: Any, line: int, field: str, name: str) -> Path:
    if not isinstance(relative, str) or not relative:
        raise TrainerError(f"channel {name} line {line}: {field!r} must be a relative path")
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts:
        raise TrainerError(f"channel {name} line {line}: {field!r} must stay inside the channel")
    return channel / path


def read_channel(directory: Path, name: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """The examples of one channel; `image` (and `mask`) become absolute Paths. Errors name the
    channel and line, never ids or file names (they may identify patients)."""
    file = directory / "examples.jsonl"
    if not file.is_file():
        raise TrainerError(f"channel {name} has no examples (no examples.jsonl)")
    examples = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise TrainerError(f"channel {name} line {number} is not valid JSON") from None
            if not isinstance(item, dict):
                raise TrainerError(f"channel {name} line {number} is not a JSON object")
            for key in fields:
                if key not in item:
                    raise TrainerError(f"channel {name} line {number} has no {key!r}")
            for key in ("image", "mask"):
                if key in fields:
                    item[key] = _inside(directory, item[key], number, key, name)
            item["line"] = number
            examples.append(item)
    if not examples:
        raise TrainerError(f"channel {name} has no examples")
    return examples


# --- images ------------------------------------------------------------------------------


def open_image(
    source: Path | bytes, what: str = "image", draft: tuple[int, int] | None = None
) -> Image.Image:
    """A decoded Pillow image from a file or bytes; TrainerError when it is not one. `draft`
    lets JPEG decode at a reduced scale that is still at least that size (much faster)."""
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        if draft is not None and image.format == "JPEG":
            image.draft("L", draft)
        image.load()
    except FileNotFoundError:
        raise TrainerError(f"{what} file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise TrainerError(f"{what} could not be decoded ({type(exc).__name__})") from None
    except Image.DecompressionBombError:
        raise TrainerError(f"{what} is too large") from None
    if image.width < 1 or image.height < 1 or image.width * image.height > MAX_IMAGE_PIXELS:
        raise TrainerError(f"{what} has an unsupported size {image.width}x{image.height}")
    return image


def to_gray(image: Image.Image) -> np.ndarray:
    """Grayscale float32 in [0, 1] for any mode (8/16-bit, float, RGB(A), palette)."""
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image, dtype=np.float32) / 65535.0
    if mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float32)
        top = 65535.0 if mode == "I" else 1.0
        return np.clip(array / top, 0.0, 1.0)
    if mode not in ("L", "1", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if mode in ("P", "PA") else "RGB")
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32) / 255.0


def to_label_map(image: Image.Image) -> np.ndarray:
    """A mask image as integers (pixel value = label index); palette masks by palette index."""
    if image.mode in ("RGB", "RGBA"):
        array = np.asarray(image)
        if not (np.all(array[..., 0] == array[..., 1]) and np.all(array[..., 0] == array[..., 2])):
            raise TrainerError("mask is a colour image; use one channel (pixel = label index)")
        return array[..., 0].astype(np.int32)
    if image.mode == "LA":
        return np.asarray(image)[..., 0].astype(np.int32)
    if image.mode in ("F", "CMYK", "YCbCr", "LAB", "HSV"):
        raise TrainerError(f"mask mode {image.mode} is not supported (pixel = label index)")
    return np.asarray(image).astype(np.int32)


def png_base64(labels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(labels.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# --- model files -------------------------------------------------------------------------


#: the libraries whose versions the trainer reports (distribution name, module name)
REPORTED_LIBRARIES = (("torch", "torch"), ("numpy", "numpy"), ("scipy", "scipy"), ("pillow", "PIL"))


def environment() -> dict[str, Any]:
    """The trainer's Python and key library versions, for the platform's provenance record
    (`environment.json` in the model folder; see README.md, "Provenance")."""
    import platform
    from importlib import metadata

    libraries = {}
    for dist, module in REPORTED_LIBRARIES:
        try:
            libraries[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # e.g. a distribution packaged without metadata
            version = getattr(sys.modules.get(module), "__version__", None)
            if version:
                libraries[dist] = str(version)
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "libraries": libraries,
    }


def save_model(model_dir: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    np.savez(model_dir / "model.npz", **arrays)
    (model_dir / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (model_dir / "environment.json").write_text(
        json.dumps(environment(), indent=2, sort_keys=True) + "\n"
    )


def load_model(model_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    with np.load(model_dir / "model.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return arrays, meta


# --- entry points ------------------------------------------------------------------------


def run_training(main: Callable[[Paths], None]) -> None:
    """Run `main`; on any exception write $SM_OUTPUT_DIR/failure and exit 1."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    paths = Paths.from_env()
    try:
        main(paths)
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        if isinstance(exc, TrainerError):
            reason = str(exc)
        elif isinstance(exc, KeyboardInterrupt):
            reason = "training was interrupted"
        elif isinstance(exc, MemoryError):
            reason = "out of memory (MemoryError); try a smaller image_size or dataset"
        else:
            reason = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        reason = reason.strip()[:FAILURE_LIMIT] or type(exc).__name__
        try:
            paths.output_dir.mkdir(parents=True, exist_ok=True)
            (paths.output_dir / "failure").write_text(reason + "\n", encoding="utf-8")
        except OSError as write_error:
            print(f"could not write the failure file: {write_error}", file=sys.stderr)
        log(f"training failed: {reason}")
        sys.exit(1)


class Service(Protocol):
    """What `serve` needs from a loaded model."""

    description: str

    def predict(self, data: bytes) -> Any:
        """The prediction for one encoded image (one element of a batch's "predictions");
        TrainerError (-> 400) when the bytes are not a usable image."""

    def response(self, prediction: Any) -> dict[str, Any]:
        """The JSON body for a single-image request."""


# Optional methods of a Service (looked up with getattr, so a trainer may leave them out):
#
# - `predict_many(images: list[bytes]) -> list[Any]`: the predictions of a batch in one pass
#   (faster than `predict` per image); a TrainerError names the failing position itself.
# - `explain(data: bytes, index: int) -> dict[str, Any]`: a saliency map of the model's own
#   (e.g. Grad-CAM) for label `index`, served on the optional route `POST /explanations`:
#   `{"method", "index", "height", "width", "values": [[row], ...]}`, values >= 0, any grid
#   (the platform resizes it to the image). A trainer without `explain` answers 404 there,
#   and the platform then uses its own occlusion maps only.
EXPLAIN_ROUTE = "/explanations"


def decode_base64(item: Any, position: int) -> bytes:
    if not isinstance(item, str):
        raise TrainerError(f"instance {position} must be a base64 string")
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise TrainerError(f"instance {position} is not valid base64") from None


def make_handler(service: Service, max_instances: int = 64) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "patient-ml-trainer"

        def log_message(self, format: str, *args: Any) -> None:
            return  # no per-request log lines (they could carry client details)

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload, separators=(",", ":")).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] == "/ping":
                self._send(HTTPStatus.OK, {"status": "ok"})
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:
            route = self.path.split("?", 1)[0]
            explain = getattr(service, "explain", None)
            if route == EXPLAIN_ROUTE and explain is not None:
                self._explain(explain)
                return
            if route != "/invocations":
                self.close_connection = True  # the unread body must not become a request
                self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                self._send(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
                return
            if length > MAX_REQUEST_BYTES or length < 0:
                self.close_connection = True
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
                return
            body = self.rfile.read(length)
            kind = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            try:
                if kind == "application/json":
                    self._send(HTTPStatus.OK, self._batch(body))
                elif not body:
                    raise TrainerError("empty request body")
                else:
                    prediction = service.predict(body)
                    self._send(HTTPStatus.OK, service.response(prediction))
            except TrainerError as exc:
                self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": type(exc).__name__})

        def _body(self) -> bytes | None:
            """The request body; None when an error was answered already."""
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                self._send(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
                return None
            if length > MAX_REQUEST_BYTES or length < 0:
                self.close_connection = True
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
                return None
            return self.rfile.read(length)

        def _explain(self, explain: Callable[[bytes, int], dict[str, Any]]) -> None:
            """`POST /explanations` `{"instance": <base64 image>, "index": <label index>}`."""
            body = self._body()
            if body is None:
                return
            try:
                try:
                    data = json.loads(body)
                except (ValueError, UnicodeDecodeError):
                    raise TrainerError("body is not valid JSON") from None
                index = data.get("index") if isinstance(data, dict) else None
                if isinstance(index, bool) or not isinstance(index, int):
                    raise TrainerError(
                        'JSON body needs "instance": <base64 image> and "index": <label index>'
                    )
                self._send(HTTPStatus.OK, explain(decode_base64(data.get("instance"), 0), index))
            except TrainerError as exc:
                self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": type(exc).__name__})

        def _batch(self, body: bytes) -> dict[str, Any]:
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise TrainerError("body is not valid JSON") from None
            instances = data.get("instances") if isinstance(data, dict) else None
            if not isinstance(instances, list) or not instances:
                raise TrainerError('JSON body needs "instances": [<base64 image>, ...]')
            if len(instances) > max_instances:
                raise TrainerError(f"at most {max_instances} instances per request")
            images = [decode_base64(item, i) for i, item in enumerate(instances)]
            many = getattr(service, "predict_many", None)
            if many is not None:
                return {"predictions": many(images)}
            predictions = []
            for position, data in enumerate(images):
                try:
                    predictions.append(service.predict(data))
                except TrainerError as exc:
                    raise TrainerError(f"instance {position}: {exc}") from None
            return {"predictions": predictions}

    return Handler


def serve(service: Service) -> None:
    """Serve /ping and /invocations on 0.0.0.0:$SM_SERVE_PORT until SIGTERM/SIGINT (exit 0)."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    port = int(os.environ.get("SM_SERVE_PORT", "8080"))
    host = os.environ.get("SM_SERVE_HOST", "0.0.0.0")
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
    )
    worker.start()
    log(f"serving {service.description} on {host}:{server.server_address[1]}")
    while not stop.wait(0.2):
        pass
    log("stopping the server")
    server.shutdown()
    server.server_close()
    sys.exit(0)


def start_serving(load: Callable[[Path], Service]) -> None:
    """Load the model from SM_MODEL_DIR once, then serve; exit 1 if it cannot be loaded."""
    model_dir = Paths.from_env().model_dir
    try:
        service = load(model_dir)
    except Exception as exc:
        print(f"could not load the model: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    serve(service)
