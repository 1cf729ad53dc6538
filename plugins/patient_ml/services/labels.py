"""Examples and labels of a dataset for the REST API (and later the UI): list and read examples,
save a label (written as a FHIR Observation into the dataset's source: draft = `preliminary`,
confirmed = `final`, a confirmed label changed again = `amended`), and segmentation label files
in the reference run-length format.

Saving a label updates the example's newest label Observation of this dataset in place (a new
version of the same resource) and marks any other label Observation of the dataset still in use
for that image `entered-in-error`, so the example has exactly the label that was saved.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from patient_ml.config.identifiers import require_safe_id
from patient_ml.config.models import DatasetSource
from patient_ml.curation.fetch import ImageFetching
from patient_ml.curation.images import DecodedImage, ImageLimits, inspect_image
from patient_ml.curation.pipeline import DatasetView
from patient_ml.curation.quarantine import QuarantineError
from patient_ml.curation.records import resource_version
from patient_ml.db.engine import read_scope, session_scope
from patient_ml.exceptions import ConflictError, FieldError, InvalidInputError, NotFoundError
from patient_ml.fhir import mapping, validation
from patient_ml.fhir.errors import FhirConfigError
from patient_ml.fhir.ndjson import NdjsonSourceError
from patient_ml.labels.masks import areas_to_png, png_to_areas
from patient_ml.labels.sinks import sink_for
from patient_ml.scoring.sinks import prediction_sink_for
from patient_ml.services import audit, example_predictions, prediction_log
from patient_ml.services import examples as ex
from patient_ml.services.common import to_millis
from patient_ml.services.curation import dataset_view
from patient_ml.services.curation_inputs import build_curation_inputs
from patient_ml.services.datasets import get_dataset
from patient_ml.services.example_predictions import ChampionPredictions

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from patient_ml.db.models import Model
    from patient_ml.fhir.client import FhirClient

LABEL_FILE_PREFIX = "label-file/"

log = logging.getLogger("patient_ml.labels")


@dataclass
class DatasetContext:
    """One dataset with what reading and writing its examples needs."""

    view: DatasetView
    revision: int
    index_of_label: dict[str, int]  # label id → index
    source: Any  # RecordSource
    store: Any  # ArtifactStore
    fetcher: ImageFetching
    sink_factory: Callable[[], Any]
    # The dataset's split assignments of patient keys (read with the index); None: not known.
    load_splits: Callable[[], dict[str, str]] | None = None
    # Where batch scoring writes prediction Observations (patient_ml.scoring.sinks).
    prediction_sink_factory: Callable[[], Any] | None = None

    @property
    def label_of_index(self) -> dict[int, str]:
        return {index: label_id for label_id, index in self.index_of_label.items()}

    def index(self) -> ex.ExampleIndex:
        return ex.cached_index((self.view.id, self.revision), self._build)

    def refresh_example(self, example_id: str) -> ex.ExampleIndex:
        """The index with one example re-read from the source as it is now: only the records
        that concern it where the source can find them (`records_of`: NDJSON files, a FHIR
        server's search), else the whole source."""
        records_of = getattr(self.source, "records_of", None)
        if records_of is None:
            ex.forget(self.view.id)
            return self.index()
        index = self.index()
        # a chained dataset's selection stays as the whole index made it: one image's records
        # may not include its upstream prediction (a FHIR server's `records_of`)
        view = dataclasses.replace(self.view, upstream=None)
        with self._reading():
            part = ex.build_index(
                view, records_of(example_id), getattr(self.source, "written_at", None)
            )
        ex.apply_refresh((self.view.id, self.revision), index, example_id, part)
        return index

    def _build(self) -> ex.ExampleIndex:
        with self._reading():
            written_at = getattr(self.source, "written_at", None)
            built = ex.build_index(self.view, self.source.records(), written_at)
        if self.load_splits is not None:
            built.split_of_patient = self.load_splits()
        return built

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except (NdjsonSourceError, FhirConfigError) as exc:  # the dataset's setup, not the call
            raise ConflictError(
                f"The source of dataset {self.view.name!r} cannot be read: {exc.message}",
                fix=exc.fix or "fix the dataset's source (PUT /datasets/{id})",
            ) from exc


def dataset_context(
    engine: Engine, dataset_ref: str, *, fhir_client_factory: Callable[[str], FhirClient]
) -> DatasetContext:
    """`fhir_client_factory(conn_id)`: the FHIR client of the dataset's connection (the caller's
    I/O boundary, e.g. `patient_ml.hooks.fhir.fhir_client`; services do not import Airflow)."""
    factory = fhir_client_factory
    clients: list[FhirClient] = []

    def client_for(conn_id: str) -> FhirClient:
        if not clients:
            clients.append(factory(conn_id))
        return clients[0]

    with read_scope(engine) as session:
        dataset = get_dataset(session, dataset_ref)
        revision = dataset.revision
        source_cfg = DatasetSource.model_validate(dataset.source or {})
        labels = dataset.problem_definition["labelDefinition"]["labels"]
        index_of_label = {str(label["id"]): int(label["index"]) for label in labels}
    view = dataset_view(engine, dataset_ref)
    inputs = build_curation_inputs(engine, view.id, fhir_client_factory=client_for)

    def load_splits() -> dict[str, str]:
        from sqlalchemy import select

        from patient_ml.db.models import SplitAssignment

        with read_scope(engine) as session:
            rows = session.execute(
                select(SplitAssignment.key, SplitAssignment.split).where(
                    SplitAssignment.dataset_id == view.id, SplitAssignment.key_kind == "patient"
                )
            )
            return {key: split for key, split in rows}

    def write_back_client() -> FhirClient | None:
        """The FHIR client labels and predictions are written back through (None for an NDJSON
        source); asked for when a sink is made, as before, and made once (`client_for`)."""
        return None if source_cfg.type == "ndjson" else client_for(source_cfg.conn_id)

    return DatasetContext(
        load_splits=load_splits,
        view=view,
        revision=revision,
        index_of_label=index_of_label,
        source=inputs.source,
        store=inputs.store,
        fetcher=inputs.fetcher,
        sink_factory=lambda: sink_for(source_cfg, fhir_client=write_back_client()),
        prediction_sink_factory=lambda: prediction_sink_for(
            source_cfg, fhir_client=write_back_client()
        ),
    )


# --------------------------------------------------------------------------- examples


def list_examples(
    ctx: DatasetContext,
    *,
    has_label: bool | None = None,
    has_unconfirmed_label: bool | None = None,
    patient_id: str | None = None,
    marker: str | None = None,
    limit: int = ex.DEFAULT_PAGE,
    filters: ex.Filters | None = None,
    extended: bool = False,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """A page of examples; `extended` adds each example's extension fields and the counts per
    status (`counts`) of the examples the filters select, and with `filters.predicted` (and
    the `engine`) the champion's stored prediction of each example that has one."""
    chosen = filters or ex.Filters(has_label, has_unconfirmed_label, patient_id)
    _check_filters(ctx, chosen)
    index = ctx.index()
    page, next_marker = ex.select(index, marker=marker, limit=limit, filters=chosen)
    wire: dict[str, Any] = {"examples": [_wire(ctx, index, e, extended) for e in page]}
    if extended and engine is not None and isinstance(chosen.predicted, ChampionPredictions):
        _add_predictions(engine, ctx, chosen.predicted, page, wire["examples"])
    if next_marker:
        wire["marker"] = next_marker
    if extended:
        wire["counts"] = ex.counts(index, chosen)
    return wire


def _wire(
    ctx: DatasetContext, index: ex.ExampleIndex, example: ex.Example, extended: bool
) -> dict[str, Any]:
    wire = ex.example_to_wire(example, ctx.view.problem_type)
    if extended:
        wire.update(ex.extension_fields(index, example))
    return wire


def _dataset_model(session: Session, ctx: DatasetContext, model_ref: str) -> Model:
    """The model `model_ref` (id or name), which must be one of this dataset's (422)."""
    from patient_ml.db.models import Model
    from patient_ml.services.common import get_by_id_or_name

    model = get_by_id_or_name(session, Model, model_ref)
    if model.dataset_id != ctx.view.id:
        raise _invalid("modelId", f"must be a model of dataset {ctx.view.id}", model_ref)
    return model


def champion_predictions(
    engine: Engine, ctx: DatasetContext, model_ref: str
) -> ChampionPredictions:
    """Which examples of the dataset the model's current champion has predicted
    (`ChampionPredictions`); the model must be one of this dataset's."""
    with read_scope(engine) as session:
        return example_predictions.of_champion(session, _dataset_model(session, ctx, model_ref))


def _add_predictions(
    engine: Engine,
    ctx: DatasetContext,
    found: ChampionPredictions,
    page: list[ex.Example],
    wires: list[dict[str, Any]],
) -> None:
    """`prediction` on each example the champion has predicted (its current image): imgClf the
    label and confidence, imgSeg the fraction of pixels per label index."""
    current = [e.id for e in page if found.has(e.id, e.image.version)]
    with read_scope(engine) as session:
        rows = example_predictions.outputs(session, found, current)
    names = dict(ctx.view.labels)
    for example, wire in zip(page, wires, strict=True):
        row = rows.get(example.id)
        if row is None or row.image_version != example.image.version:
            continue
        out: dict[str, Any] = {"runId": row.run_id, "at": to_millis(row.created_at)}
        if ctx.view.problem_type == "imgClf" and row.output.get("label") is not None:
            index = int(row.output["label"])
            out.update(labelIndex=index, labelName=names.get(index))
            out["confidence"] = row.output.get("confidence")
        elif "fractions" in row.output:
            out["fractions"] = row.output["fractions"]
        wire["prediction"] = out


def _check_filters(ctx: DatasetContext, filters: ex.Filters) -> None:
    if filters.status is not None and filters.status not in ex.STATUSES:
        raise _invalid("status", f"must be one of {', '.join(ex.STATUSES)}", filters.status)
    if filters.split is not None and filters.split not in ex.SPLITS:
        raise _invalid("split", f"must be one of {', '.join(ex.SPLITS)}", filters.split)
    if filters.label_index is not None:
        if ctx.view.problem_type != "imgClf":
            raise _invalid("labelIndex", "filters classification labels only", filters.label_index)
        known = dict(ctx.view.labels)
        if filters.label_index not in known:
            names = ", ".join(f"{i} ({n})" for i, n in sorted(known.items()))
            raise _invalid("labelIndex", f"must be a label index of this dataset: {names}",
                           filters.label_index)  # fmt: skip


def get_example(ctx: DatasetContext, example_id: str, *, extended: bool = False) -> dict[str, Any]:
    """The example; `extended` adds its extension fields and its label history (every version
    of its label Observations, oldest first)."""
    index = ctx.index()
    wire = _wire(ctx, index, index.get(example_id), extended)
    if extended:
        wire["labelHistory"] = index.history.get(example_id, [])
    return wire


PREVIEW_SIZES = (64, 128, 256, 512)


def example_preview(ctx: DatasetContext, example_id: str, size: int | None) -> bytes:
    """The example's image as a browser shows it: a PNG (DICOM converted as curation converts
    it, 16-bit grey scaled to 8 bits), at full size or scaled down to fit `size` pixels."""
    import io

    import numpy as np
    from PIL import Image

    info = _decoded_image(ctx, ctx.index().get(example_id))
    with Image.open(io.BytesIO(info.stored_bytes)) as img:
        img.load()
        if img.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
            pixels = np.asarray(img, dtype=np.float64)
            low, high = float(pixels.min()), float(pixels.max())
            scaled = (pixels - low) * (255.0 / (high - low)) if high > low else pixels * 0
            shown = Image.fromarray(scaled.astype(np.uint8), mode="L")
        elif img.mode not in {"L", "RGB", "RGBA"}:
            shown = img.convert("RGB")
        else:
            shown = img.copy()
    if size is not None:
        shown.thumbnail((size, size))
    out = io.BytesIO()
    shown.save(out, format="PNG", compress_level=1 if size is None else 6)
    return out.getvalue()


def label_hint(
    engine: Engine, ctx: DatasetContext, example_id: str, model_ref: str
) -> dict[str, Any]:
    """The deployed champion's prediction for the example, as a hint for the labeller: read
    from the dataset's source as it is now (not only snapshot images), never saved as a label
    and not recorded in the model's prediction log (monitoring sees real traffic only)."""
    from patient_ml.services.predictions import predict

    with read_scope(engine) as session:  # the model only: not every prediction it kept
        model_id = _dataset_model(session, ctx, model_ref).id
    image = example_preview(ctx, example_id, None)
    answer = predict(engine, ctx.store, model_id, image=image, log=False)
    answer["exampleId"] = example_id
    _keep_prediction(engine, ctx, example_id, answer)
    return answer


def _keep_prediction(
    engine: Engine, ctx: DatasetContext, example_id: str, answer: dict[str, Any]
) -> None:
    """Best effort: the hint is answered even when its summary cannot be kept."""
    try:
        with session_scope(engine) as session:
            example_predictions.record(
                session,
                model_id=answer["modelId"],
                example_id=example_id,
                run_id=answer["runId"],
                image_version=ctx.index().get(example_id).image.version,
                output=prediction_log.output_summary(answer["problemType"], answer),
            )
    except Exception as exc:
        log.warning("the prediction for example %s was not kept: %s", example_id, exc)


def example_image(ctx: DatasetContext, example_id: str) -> tuple[bytes, str]:
    """The example's image bytes and content type, read as curation reads them."""
    example = ctx.index().get(example_id)
    return _image_bytes(ctx, example), example.image.content_type or "application/octet-stream"


def _image_bytes(ctx: DatasetContext, example: ex.Example) -> bytes:
    try:
        return bytes(ctx.fetcher.fetch(example.image.attachment))
    except QuarantineError as exc:
        raise NotFoundError(
            f"The image of example {example.id!r} cannot be read: {exc.reason}.",
            fix="check the DocumentReference's attachment and the allowed roots/hosts",
        ) from None


# --------------------------------------------------------------------------- labels


_SAVE_LOCKS: dict[str, threading.Lock] = {}
_SAVE_LOCKS_LOCK = threading.Lock()


def put_label(
    engine: Engine,
    ctx: DatasetContext,
    example_id: str,
    body: dict[str, Any],
    *,
    actor: str,
    if_match: str | None = None,
) -> dict[str, Any]:
    """Save the example's label (the reference `Label` body); returns the example.

    `if_match` (the `labelVersion` the labeller's page read; `none`: it had no label) refuses
    the save (409) when someone else saved a label of the example since: nothing is overwritten
    silently. Checks and writes of one dataset are serialised in this process."""
    with _SAVE_LOCKS_LOCK:
        lock = _SAVE_LOCKS.setdefault(ctx.view.id, threading.Lock())
    with lock:
        return _put_label(engine, ctx, example_id, body, actor=actor, if_match=if_match)


def _put_label(
    engine: Engine,
    ctx: DatasetContext,
    example_id: str,
    body: dict[str, Any],
    *,
    actor: str,
    if_match: str | None,
) -> dict[str, Any]:
    index = ctx.refresh_example(example_id)  # the source's current state, not the cache's
    example = index.get(example_id)
    if if_match is not None and if_match.strip('"') != ex.label_version(example):
        raise _changed_meanwhile(index, example)
    problem = ctx.view.problem_type
    if body.get("labelType") != problem:
        raise _invalid("labelType", f"must be {problem!r} for this dataset", body.get("labelType"))
    confirmed = bool(body.get("isConfirmed"))
    if problem == "imgClf":
        value = {"valueCodeableConcept": {"coding": [_class_coding(ctx, body.get("classes"))]}}
        extension = None
    else:
        value = {"valueCodeableConcept": {"coding": [_mask_coding(ctx)]}}
        extension = _mask_extension(ctx, example, body.get("mask"))
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    sink = ctx.sink_factory()
    current = dict(example.observations[-1]) if example.observations else None
    target = _label_observation(ctx, example, current, value, extension, confirmed, actor, now)
    others = [
        _superseded_checked(dict(raw), target["id"], actor, now, sink.assigns_versions)
        for raw in example.observations[:-1]
    ]
    if not sink.assigns_versions:
        target["meta"] = _next_meta(current, now)
    written = sink.write([validation.validated(target), *others])
    ctx.refresh_example(example_id)  # the versions the source gave them
    with session_scope(engine) as session:
        audit.record(
            session,
            actor=actor,
            action="label.put",
            entity_type="example",
            entity_id=example_id,  # a FHIR id (<= 64 characters, the column's size)
            before=_audit_label(example),
            after={
                "datasetId": ctx.view.id,
                "observation": ex.history_ref(
                    "Observation", target["id"], resource_version(written[0])
                ),
                "status": target["status"],
                "value": _audit_value(target),
                "superseded": [o["id"] for o in others],
            },
        )
    saved = ex.label_of(written[0], ctx.view)
    updated = ex.example_of(
        example.image, {}, [(saved, written[0])] if saved else [], example.updated_ms or None
    )
    return ex.example_to_wire(updated, problem)


def _label_observation(
    ctx: DatasetContext,
    example: ex.Example,
    current: dict[str, Any] | None,
    value: dict[str, Any],
    extension: dict[str, Any] | None,
    confirmed: bool,
    actor: str,
    now: str,
) -> dict[str, Any]:
    was_confirmed = current is not None and current.get("status") in mapping.LABEL_STATUS_CONFIRMED
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": current["id"] if current else _observation_id(ctx.view.label_system, example.id),
    }
    if current and (current.get("meta") or {}).get("versionId"):
        resource["meta"] = {"versionId": current["meta"]["versionId"]}  # If-Match on a server
    if extension is not None:
        resource["extension"] = [extension]
    resource.update(
        {
            "status": ("amended" if was_confirmed else "final") if confirmed else "preliminary",
            "code": {
                "coding": [
                    {
                        "system": mapping.LABEL_CODE_SYSTEM,
                        "code": mapping.LABEL_CODE,
                        "display": "Image label",
                    }
                ]
            },
            "subject": {"reference": example.image.patient_ref},
            "focus": [{"reference": f"DocumentReference/{example.id}"}],
            "issued": now,
            **value,
        }
    )
    resource["performer"] = [{"display": actor}]  # who saved it (drafts too: label history)
    return resource


def _superseded(
    raw: dict[str, Any], by_id: str, actor: str, now: str, server_versions: bool
) -> dict[str, Any]:
    raw["status"] = "entered-in-error"
    raw["issued"] = now
    notes = list(raw.get("note") or [])
    notes.append({"text": f"Superseded by Observation/{by_id}, saved by {actor}.", "time": now})
    raw["note"] = notes
    if not server_versions:
        raw["meta"] = _next_meta(raw, now)
    return raw


def _superseded_checked(
    raw: dict[str, Any], by_id: str, actor: str, now: str, server_versions: bool
) -> dict[str, Any]:
    """`_superseded`, validated with its fhir.resources model unless the source already held
    the record invalid (then it is written anyway: an invalid record elsewhere must not block
    labelling; curation quarantines it with the reason)."""
    was_valid = not validation.problems(raw)
    superseded = _superseded(raw, by_id, actor, now, server_versions)
    return validation.validated(superseded) if was_valid else superseded


def _next_meta(current: dict[str, Any] | None, now: str) -> dict[str, Any]:
    meta = dict((current or {}).get("meta") or {})
    version = str(meta.get("versionId") or "")
    numeric = version.isascii() and version.isdigit()  # isdigit() alone accepts non-ASCII digits
    meta["versionId"] = str(int(version) + 1) if numeric else "1"
    meta["lastUpdated"] = now
    return meta


def _observation_id(label_system: str, example_id: str) -> str:
    digest = hashlib.sha256(f"{label_system}|{example_id}".encode()).hexdigest()
    return f"pml-label-{digest[:40]}"


def _class_coding(ctx: DatasetContext, classes: object) -> dict[str, str]:
    names = dict(ctx.view.labels)
    if (
        not isinstance(classes, list)
        or len(classes) != 1
        or isinstance(classes[0], bool)
        or not isinstance(classes[0], int | float)
        or int(classes[0]) != classes[0]
        or int(classes[0]) not in names
    ):
        known = ", ".join(f"{i} ({n})" for i, n in sorted(names.items()))
        raise _invalid("classes", f"must be one label index of this dataset: {known}", classes)
    index = int(classes[0])
    return {"system": ctx.view.label_system, "code": str(index), "display": names[index]}


def _mask_coding(ctx: DatasetContext) -> dict[str, str]:
    return {"system": ctx.view.label_system, "code": "mask", "display": "Segmentation mask"}


def _mask_extension(ctx: DatasetContext, example: ex.Example, mask: object) -> dict[str, Any]:
    file_id = mask.get("fileId") if isinstance(mask, dict) else None
    if not isinstance(file_id, str) or not file_id:
        raise _invalid("mask.fileId", "is required: the fileId of PUT .../label-file", file_id)
    if file_id.startswith(LABEL_FILE_PREFIX):
        sha = file_id[len(LABEL_FILE_PREFIX) :]
        key = label_file_key(ctx.view.id, sha)
        if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha) or not (
            ctx.store.exists(key)
        ):  # fmt: skip
            raise _invalid("mask.fileId", "is no label file of this dataset", file_id)
        data = ctx.store.read_bytes(key)
        attachment = {
            "contentType": "image/png",
            "data": base64.b64encode(data).decode(),
            "size": len(data),
            "hash": base64.b64encode(hashlib.sha1(data).digest()).decode(),
            "title": f"{file_id}.png",
        }
        return {"url": mapping.MASK_EXTENSION_URL, "valueAttachment": attachment}
    label = example.label
    if label is not None and file_id.split("/_history/")[0] == f"Observation/{label.record.id}":
        return {"url": mapping.MASK_EXTENSION_URL, "valueAttachment": label.record.mask}
    raise _invalid(
        "mask.fileId",
        "must be a fileId from PUT .../label-file or the example's current label mask",
        file_id,
    )


def _changed_meanwhile(index: ex.ExampleIndex, example: ex.Example) -> ConflictError:
    newest = (index.history.get(example.id) or [{}])[-1]
    who = newest.get("by") or "someone else"
    when = newest.get("at")
    moment = (
        datetime.fromtimestamp(when / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if isinstance(when, int | float)
        else "meanwhile"
    )
    status = newest.get("status", "a label")
    return ConflictError(
        f"Example {example.id!r} was labelled by {who} ({status}, {moment}) after you opened "
        "it; your label was not saved.",
        fix="look at the current label, then save yours again if it should replace it",
    )


def _invalid(field: str, message: str, value: object) -> InvalidInputError:
    return InvalidInputError(f"The label's {field} {message}.", [FieldError(field, message, value)])


def _audit_label(example: ex.Example) -> dict[str, Any] | None:
    if example.label is None:
        return None
    record = example.label.record
    return {
        "observation": ex.history_ref("Observation", record.id, record.version),
        "status": example.label.status,
        "value": record.class_code if record.class_code is not None else "mask",
    }


def _audit_value(resource: dict[str, Any]) -> str:
    coding = resource["valueCodeableConcept"]["coding"][0]
    return str(coding["code"])


# --------------------------------------------------------------------------- label files


def label_file_key(dataset_id: str, sha: str) -> str:
    return f"datasets/{require_safe_id(dataset_id, 'dataset id')}/label-files/{sha}.png"


def put_label_file(ctx: DatasetContext, example_id: str, body: dict[str, Any]) -> str:
    """Store the mask of RLE areas (content-addressed); returns its fileId for PUT label."""
    _require_segmentation(ctx)
    example = ctx.index().get(example_id)
    decoded = _decoded_image(ctx, example)
    height, width = decoded.height, decoded.width
    if (body.get("height"), body.get("width")) != (height, width):
        raise _invalid(
            "height",
            f"and width must be the image's size, {height} x {width}",
            [body.get("height"), body.get("width")],
        )
    png = areas_to_png(
        body.get("areas") or [], height=height, width=width, index_of_label=ctx.index_of_label
    )
    sha = hashlib.sha256(png).hexdigest()
    ctx.store.put_if_absent_bytes(label_file_key(ctx.view.id, sha), png)
    return LABEL_FILE_PREFIX + sha


def get_label_file(ctx: DatasetContext, example_id: str) -> dict[str, Any] | None:
    """The example's current mask as reference label data, None when it has no mask."""
    _require_segmentation(ctx)
    example = ctx.index().get(example_id)
    if example.label is None or not example.label.record.mask:
        return None
    try:
        data = ctx.fetcher.fetch(example.label.record.mask)
        areas = png_to_areas(data, label_of_index=ctx.label_of_index)
    except (QuarantineError, OSError, ValueError) as exc:
        raise NotFoundError(
            f"The mask of example {example_id!r} cannot be read: {exc}.",
            fix="save the label again, or fix the Observation's mask attachment",
        ) from None
    return {"labelType": "imgSeg", "projectId": ctx.view.id, **areas}


def _require_segmentation(ctx: DatasetContext) -> None:
    if ctx.view.problem_type != "imgSeg":
        raise NotFoundError(
            f"Dataset {ctx.view.name!r} is imgClf: label files are for imgSeg datasets.",
            fix="save classification labels with PUT .../examples/{exampleId}/label",
        )


def _decoded_image(ctx: DatasetContext, example: ex.Example) -> DecodedImage:
    """The example's image, decoded as curation decodes it (404 when it cannot be)."""
    data = _image_bytes(ctx, example)
    limits = ImageLimits(max_pixels=ctx.view.max_image_pixels, min_side=1)
    try:
        return inspect_image(data, example.image.content_type, limits, fingerprint=None)
    except QuarantineError as exc:
        raise NotFoundError(
            f"The image of example {example.id!r} cannot be decoded ({exc.reason}).",
            fix="fix the image; curation quarantines it too",
        ) from None
