"""A run's provenance end to end through the services, on real curated snapshots with real
trainer processes (local backend) and PostgreSQL: the tuning stage records the best trial's
image, the trainer's environment, the package and the sampler seed; evaluation adds the
inference image; a second run of the model whose image tag now names another image says so
on the run's wire shape (the run page) and in the model card (document, Markdown, JSON)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from patient_ml.db.engine import session_scope
from patient_ml.evaluation.model_card import render_markdown
from patient_ml.services import provenance
from patient_ml.services.model_card_document import build_model_card_document
from patient_ml.services.model_cards import build_model_card, write_model_card
from patient_ml.services.runs import create_run, get_run, run_to_wire
from patient_ml.services.snapshots import link_run_to_snapshot
from patient_ml.services.tuning import TuningWorker, finish_tuning
from patient_ml.training.backends.local import LocalBackend
from patient_ml.training.provenance import folder_digest, short_digest
from tests.training.helpers import IMAGE, METRICS, SCRIPTED, curated_run

REFERENCE = "patient-ml/scripted-trainer"
MODEL = {
    "trainingApproach": {
        "type": "tuningJob",
        "trainingImage": IMAGE,
        "metricDefinitions": METRICS,
        "objective": {"metric": "validation:accuracy", "direction": "maximize"},
        "searchSpace": [{"type": "integer", "name": "epochs", "min": 1, "max": 2}],
        "maxTrials": 2,
        "seed": 7,
    },
    "deployApproach": {"type": "edge", "inferenceImage": IMAGE},
}


def tune(engine: Engine, store: Any, run_id: str, trainer: Path, workdir: Path) -> None:
    worker = TuningWorker(
        engine=engine,
        store=store,
        backend=LocalBackend({REFERENCE: trainer}),
        run_id=run_id,
        worker="0",
        workdir=workdir,
    )
    assert [o.state for o in worker.run()] == ["complete", "complete"]
    finish_tuning(engine, store, run_id, actor="t")


def served(trainer: Path) -> dict[str, Any]:
    """The challenger's part of an evaluation report (as `evaluation.evaluate` writes it)."""
    return {"image": IMAGE, "serverKind": "local", "imageDigest": folder_digest(trainer)}


def test_a_run_records_what_trained_it_and_a_moved_tag_is_named(
    engine: Engine, tmp_path: Path
) -> None:
    trainer = tmp_path / "trainer"
    shutil.copytree(SCRIPTED, trainer)
    first_id, store = curated_run(engine, tmp_path / "one", MODEL, patients=30)
    tune(engine, store, first_id, trainer, tmp_path / "tune-1")
    first_digest = folder_digest(trainer)
    with session_scope(engine) as session:
        first = get_run(session, first_id)
        provenance.record_inference(first, served(trainer))
        wire = run_to_wire(session, first)["provenance"]
        model_id, snapshot_id = first.model_id, first.snapshot_id
    commit = subprocess.run(
        ["git", "-C", str(Path(provenance.__file__).parent), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert wire["training"] == {
        "role": "training",
        "reference": IMAGE,
        "backend": "local",
        "digest": first_digest,
        "repoDigests": [],
    }
    assert wire["inference"]["digest"] == first_digest
    assert wire["trainer"]["reportedBy"] == "host" and wire["trainer"]["python"]
    assert wire["package"]["commit"] == commit and wire["package"]["commitSource"] == "git"
    assert wire["sampler"] == {
        "name": "TPESampler",
        "seed": 7,
        "trialSeed": "seed * 100003 + n",
        "pruner": "MedianPruner",
    }
    assert wire["bestTrial"] in (0, 1) and wire["tagMoved"] == []

    # The same tag, another image: the trainer changed between the runs.
    (trainer / "train").write_text((trainer / "train").read_text() + "\n# a new build\n")
    second_digest = folder_digest(trainer)
    with session_scope(engine) as session:
        second_id = create_run(session, model_id, actor="t").id
        link_run_to_snapshot(session, second_id, str(snapshot_id), actor="t")
    tune(engine, store, second_id, trainer, tmp_path / "tune-2")
    with session_scope(engine) as session:
        second = get_run(session, second_id)
        provenance.record_inference(second, served(trainer))
    with session_scope(engine) as session:
        second = get_run(session, second_id)
        moved = run_to_wire(session, second)["provenance"]["tagMoved"]
        document = build_model_card_document(session, second_id)
        flat = build_model_card(session, second_id)
        first_slug = get_run(session, first_id).slug
        # the earlier run does not compare with a later one
        assert run_to_wire(session, get_run(session, first_id))["provenance"]["tagMoved"] == []
    expected = {
        "reference": IMAGE,
        "digest": second_digest,
        "previousDigest": first_digest,
        "previousRunId": first_id,
        "previousRunSlug": first_slug,
    }
    assert moved == [{"role": "training", **expected}, {"role": "inference", **expected}]

    lineage = document.lineage
    assert lineage.training_image_digest == second_digest
    assert lineage.inference_image_digest == second_digest
    assert lineage.training_backend == "local" and lineage.source_commit == commit
    assert lineage.sampler and "seed 7" in lineage.sampler
    assert lineage.trainer_python and lineage.trainer_reported_by == "host"
    sentence = (
        f"The training image tag {IMAGE} moved between runs: run {first_slug} used "
        f"{short_digest(first_digest)}, this run {short_digest(second_digest)}."
    )
    assert lineage.tag_moves[0] == sentence
    markdown = render_markdown(document)
    assert f"- **Image tag moved:** {sentence}" in markdown
    assert "- Tuning sampler: Optuna TPESampler, seed 7" in markdown
    assert f"- Source commit: {commit}" in markdown
    assert "local-sha256:" in markdown
    assert flat["provenance"]["tagMoved"][0]["previousDigest"] == first_digest
    assert "interpreter" not in flat["provenance"]["trainer"]  # no server path on the card
    assert "interpreter" in moved_run_trainer(engine, second_id)  # the run page has it
    keys = write_model_card(engine, store, second_id)
    assert keys["json"].endswith("model-card.json")
    written = orjson.loads(store.read_bytes(f"runs/{second_id}/model-card.json"))
    assert written["provenance"]["training"]["digest"] == second_digest


def moved_run_trainer(engine: Engine, run_id: str) -> dict[str, Any]:
    with session_scope(engine) as session:
        return dict(run_to_wire(session, get_run(session, run_id))["provenance"]["trainer"])


def test_a_run_without_provenance_says_not_recorded(engine: Engine, tmp_path: Path) -> None:
    run_id, _ = curated_run(engine, tmp_path, MODEL, patients=20)
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        assert "provenance" not in run_to_wire(session, run)
        markdown = render_markdown(build_model_card_document(session, run_id))
    assert "- Tuning sampler: not recorded" in markdown
    assert "- Trainer: not recorded" in markdown
    assert "(current; the run recorded none)" in markdown
