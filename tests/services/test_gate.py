"""The change-control gate on SQLite and PostgreSQL: non-inferiority rules refuse the automatic
policy and make a person's approval an explicit, audited override; an override where none is
needed is refused; worse on the objective alone needs one too; a repeat of a rejected run is
flagged (and the policy declines it); the two-person rule waits for a second, different
approver before the run counts as approved and may deploy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from patient_ml.db.engine import session_scope
from patient_ml.deploy import check_deploy_request
from patient_ml.exceptions import ConfigValidationError, ConflictError
from patient_ml.services import approval_state, approvals
from patient_ml.services.audit import events_for
from patient_ml.services.auto_approval import try_auto_approve
from patient_ml.services.gate import gate_for
from patient_ml.services.runs import get_run, run_to_wire
from tests.services.evaluated import (
    evaluated_run,
    model_with_champion,
    model_with_policy,
    set_policy,
)

RULES = [
    {"metric": "sensitivity:positive", "margin": 0.05},
    {"metric": "auroc", "margin": 0.1},
]
AUTO = {"enabled": True, "allowWithoutChampion": True}


def _field_error(exc: pytest.ExceptionInfo[ConfigValidationError]) -> tuple[str, str]:
    [error] = exc.value.errors
    return error.field, error.message


def _actions(engine: Engine, run_id: str) -> list[str]:
    with session_scope(engine) as session:
        return [e.action for e in events_for(session, "run", run_id)]


def test_a_failed_rule_stops_the_policy_and_needs_an_audited_override(
    engine: Engine, tmp_path: Path
) -> None:
    policy = {"nonInferiority": RULES, "autoApproval": AUTO}
    model_id = model_with_champion(engine, tmp_path, policy)
    worse = evaluated_run(engine, tmp_path, model_id, miss=0.45, seed=2)  # misses many positives

    with session_scope(engine) as session:
        gate = gate_for(session, get_run(session, worse))
        by_metric = {r.metric: r for r in gate.rules}
        sensitivity = by_metric["sensitivity:positive"]
        assert not sensitivity.passed and sensitivity.low is not None and sensitivity.low < -0.05
        assert sensitivity.stratum == "overall" and gate.override_required
        assert "fails non-inferiority: Sensitivity of positive" in gate.reasons()[0]
        approval, outcome = try_auto_approve(session, worse)
    assert approval is None and outcome is not None and not outcome.passed
    failed = {c["name"] for c in outcome.criteria if not c["passed"]}
    assert "nonInferiority:sensitivity:positive@overall" in failed
    assert "run.auto_approval.declined" in _actions(engine, worse)

    with session_scope(engine) as session, pytest.raises(ConfigValidationError) as refused:
        approvals.decide(session, worse, "approved", user="dr-a", reason="ok", channel="api")
    field, message = _field_error(refused)
    assert field == "override" and "is required to approve run" in message
    assert "Sensitivity of positive" in message and "or reject the run" in message
    with session_scope(engine) as session, pytest.raises(ConfigValidationError) as same:
        approvals.decide(session, worse, "approved", user="dr-a", reason="needed now",
                         channel="api", override="needed now")  # fmt: skip
    assert "its own justification" in _field_error(same)[1]
    with session_scope(engine) as session, pytest.raises(ConfigValidationError) as rejecting:
        approvals.decide(session, worse, "rejected", user="dr-a", reason="worse",
                         channel="api", override="why")  # fmt: skip
    assert "only applies to approving" in _field_error(rejecting)[1]

    with session_scope(engine) as session:
        approval = approvals.decide(
            session, worse, "approved", user="dr-a", reason="site B outage needs a model",
            channel="ui", override="accepted: lower sensitivity is covered by a second read",
        )  # fmt: skip
        override = (approval.criteria or {})["override"]
        assert override["justification"].startswith("accepted: lower sensitivity")
        assert "sensitivity:positive" in override["failedRules"]
        assert approval.criteria and approval.criteria["gate"]["overrideRequired"] is True
        assert approval_state.approval_status(session, get_run(session, worse)) == "approved"
        wire = run_to_wire(session, get_run(session, worse))
    assert "run.override_approved" in _actions(engine, worse)
    assert "run.approved" not in _actions(engine, worse)
    assert wire["gate"]["overrideRequired"] and not wire["gate"]["passed"]
    assert wire["operatingPoint"]["rule"] == "youden"
    assert 0 < wire["operatingPoint"]["threshold"] < 1
    points = wire["evaluation"]["operatingPoints"]
    assert set(points) == {"challenger", "champion"} and points["champion"]["rule"] == "youden"
    names = {m["name"] for m in wire["metrics"]["challenger"]}
    assert {"sensitivity:positive", "specificity:positive", "ppv:positive"} <= names


def test_a_better_challenger_passes_and_an_override_is_refused(
    engine: Engine, tmp_path: Path
) -> None:
    model_id = model_with_champion(engine, tmp_path, {"nonInferiority": RULES})
    better = evaluated_run(engine, tmp_path, model_id, miss=0.02, seed=3, champion_miss=0.3)
    with session_scope(engine) as session:
        gate = gate_for(session, get_run(session, better))
        assert [r.passed for r in gate.rules] == [True, True]
        assert not gate.override_required and gate.objective and not gate.objective["worse"]
        with pytest.raises(ConfigValidationError, match="is not needed"):
            approvals.decide(session, better, "approved", user="dr-a", reason="better",
                             channel="api", override="just in case")  # fmt: skip
    with session_scope(engine) as session:
        approvals.decide(session, better, "approved", user="dr-a", reason="better", channel="api")
    assert "run.approved" in _actions(engine, better)


def test_worse_on_the_objective_alone_needs_an_override(engine: Engine, tmp_path: Path) -> None:
    model_id = model_with_champion(engine, tmp_path, {})  # no rules at all
    worse = evaluated_run(engine, tmp_path, model_id, miss=0.3, seed=4)
    with session_scope(engine) as session:
        gate = gate_for(session, get_run(session, worse))
        assert gate.rules == [] and gate.worse_on_objective and gate.override_required
        assert gate.objective and gate.objective["metric"] == "balancedAccuracy"
        with pytest.raises(ConfigValidationError, match="is worse on the objective"):
            approvals.decide(session, worse, "approved", user="dr-a", reason="ok", channel="cli")
        approvals.decide(session, worse, "approved", user="dr-a", reason="ok", channel="cli",
                         override="the champion's scanner is retired")  # fmt: skip


def test_a_repeat_of_a_rejected_run_is_flagged_and_the_policy_declines_it(
    engine: Engine, tmp_path: Path
) -> None:
    model_id = model_with_champion(engine, tmp_path, {"autoApproval": AUTO})
    snapshot = "b" * 64
    rejected = evaluated_run(engine, tmp_path, model_id, miss=0.05, seed=5, snapshot_id=snapshot)
    with session_scope(engine) as session:
        approvals.decide(session, rejected, "rejected", user="dr-b", reason="artefacts in site B",
                         channel="api")  # fmt: skip
    again = evaluated_run(engine, tmp_path, model_id, miss=0.05, seed=5, snapshot_id=snapshot)
    other = evaluated_run(engine, tmp_path, model_id, miss=0.05, seed=5, snapshot_id=snapshot,
                          hyperparameters={"epochs": "4", "image_size": "16"})  # fmt: skip
    with session_scope(engine) as session:
        gate = gate_for(session, get_run(session, again))
        [twin] = gate.twins
        assert twin["runId"] == rejected and twin["rejectedBy"] == "dr-b"
        assert twin["description"] == "artefacts in site B"
        assert gate_for(session, get_run(session, other)).twins == []  # other hyperparameters
        approval, outcome = try_auto_approve(session, again)
    assert approval is None and outcome is not None
    [declined] = [c for c in outcome.criteria if c["name"] == "notRejectedBefore"]
    assert not declined["passed"] and "rejected by dr-b" in declined["detail"]
    with session_scope(engine) as session:
        wire = run_to_wire(session, get_run(session, again))
        assert wire["gate"]["duplicateOfRejected"][0]["runId"] == rejected
        done = approvals.decide(session, again, "approved", user="dr-a", reason="fixed site B",
                                channel="api")  # fmt: skip
        assert done.criteria and done.criteria["gate"]["duplicateOfRejected"] == [rejected]


def test_two_people_must_approve_before_the_run_counts_as_approved(
    engine: Engine, tmp_path: Path
) -> None:
    policy = {"approvers": ["dr-a", "dr-b", "dr-c"], "minApprovers": 2}
    model_id = model_with_champion(engine, tmp_path, policy)
    run_id = evaluated_run(engine, tmp_path, model_id, miss=0.02, seed=6, champion_miss=0.3)
    with session_scope(engine) as session:
        approvals.decide(session, run_id, "approved", user="dr-a", reason="good", channel="api")
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        assert approval_state.approval_status(session, run) == "pending"
        assert approvals.settled_decision(session, run_id) is None
        gate = gate_for(session, run).wire()["approvals"]
        assert gate == {"required": 2, "approvedBy": ["dr-a"], "remaining": 1}
        with pytest.raises(ConflictError, match="only an approved run is deployed"):
            check_deploy_request(session, run, user="dr-a", rollback=False)
        with pytest.raises(ConflictError, match="needs 2 different people"):
            approvals.decide(session, run_id, "approved", user="dr-a", reason="again",
                             channel="ui")  # fmt: skip
    with session_scope(engine) as session:
        second = approvals.decide(session, run_id, "approved", user="dr-b", reason="agree",
                                  channel="airflow-required-actions")  # fmt: skip
        assert second.criteria and second.criteria["approvals"]["complete"] is True
        assert approval_state.approval_status(session, get_run(session, run_id)) == "approved"
        settled = approvals.settled_decision(session, run_id)
        assert settled is not None and settled.user == "dr-b"
        with pytest.raises(ConflictError, match="already approved by dr-b"):
            approvals.decide(session, run_id, "approved", user="dr-c", reason="me too",
                             channel="api")  # fmt: skip
    # one rejection after a partial approval settles the run as rejected
    rejected = evaluated_run(engine, tmp_path, model_id, miss=0.02, seed=7, champion_miss=0.3)
    with session_scope(engine) as session:
        approvals.decide(session, rejected, "approved", user="dr-a", reason="ok", channel="api")
        approvals.decide(session, rejected, "rejected", user="dr-c", reason="no", channel="api")
        assert approval_state.approval_status(session, get_run(session, rejected)) == "rejected"


def test_policy_checks_of_the_gate_name_the_field_and_the_fix(engine: Engine) -> None:
    cases = [
        ({"minApprovers": 2, "autoApproval": {"enabled": True}}, "approvalPolicy.minApprovers",
         "turn autoApproval off"),
        ({"minApprovers": 3, "approvers": ["a", "b"]}, "approvalPolicy.minApprovers",
         "names only 2"),
        ({"nonInferiority": [{"metric": "sharpness", "margin": 0.1}]},
         "approvalPolicy.nonInferiority[0].metric", "sensitivity:tumor"),
        ({"nonInferiority": [{"metric": "meanDice", "margin": 0.1}]},
         "approvalPolicy.nonInferiority[0].metric", "is a imgSeg metric"),
        ({"nonInferiority": [{"metric": "recall:tumour", "margin": 0.1}]},
         "approvalPolicy.nonInferiority[0].metric", "use one of 'negative', 'positive'"),
        ({"nonInferiority": [{"metric": "auroc", "margin": 0.1},
                             {"metric": "auroc", "margin": 0.2}]},
         "approvalPolicy.nonInferiority[1].metric", "repeats nonInferiority[0]"),
    ]  # fmt: skip
    for policy, field, says in cases:
        with pytest.raises(ConfigValidationError) as refused:
            model_with_policy(engine, policy)
        found = {e.field: e.message for e in refused.value.errors}
        assert field in found and says in found[field], (policy, found)


@pytest.mark.parametrize(
    ("point", "field", "says"),
    [
        ({"rule": "targetSensitivity"}, "operatingPoint.target", "is required"),
        ({"rule": "youden", "target": 0.9}, "operatingPoint.target", "only for rules"),
        (
            {"rule": "argmax", "positiveLabel": "positive"},
            "operatingPoint.positiveLabel",
            "not used by rule 'argmax'",
        ),
        (
            {"rule": "youden", "positiveLabel": "tumour"},
            "operatingPoint.positiveLabel",
            "use one of 'negative', 'positive'",
        ),
        ({"rule": "fixed"}, "operatingPoint.rule", "youden"),
    ],
)
def test_operating_point_checks_name_the_field_and_the_fix(
    engine: Engine, point: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(ConfigValidationError) as refused:
        model_with_policy(engine, {}, operatingPoint=point)
    found = {e.field: e.message for e in refused.value.errors}
    assert field in found and says in found[field], found


def test_changing_the_policy_changes_the_gate_of_a_waiting_run(
    engine: Engine, tmp_path: Path
) -> None:
    model_id = model_with_champion(engine, tmp_path, {})
    run_id = evaluated_run(engine, tmp_path, model_id, miss=0.02, seed=8, champion_miss=0.3)
    set_policy(engine, model_id, {"nonInferiority": [{"metric": "auroc", "margin": 0.0}]})
    with session_scope(engine) as session:
        [rule] = gate_for(session, get_run(session, run_id)).rules
        assert rule.metric == "auroc" and rule.margin == 0.0
