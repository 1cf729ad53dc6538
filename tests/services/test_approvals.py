"""The decision service on SQLite and PostgreSQL: who may decide, what a decision needs, one
decision per run (two racing decisions: exactly one wins), and the automatic policy's
criteria."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Approval
from patient_ml.exceptions import ConfigValidationError, ConflictError, PermissionDeniedError
from patient_ml.services.approval_state import approval_status
from patient_ml.services.approvals import decide, request_approval
from patient_ml.services.auto_approval import check_policy, policy_metric
from patient_ml.services.datasets import create_dataset
from patient_ml.services.models import create_model
from patient_ml.services.runs import create_run, finish_run, get_run
from tests.curation.cohort import dataset_config
from tests.operators.lifecycle import model_config


def evaluated_run(engine: Engine, **model_extra: Any) -> str:
    name = f"ds-{uuid.uuid4().hex[:6]}"
    with session_scope(engine) as session:
        dataset = create_dataset(session, dataset_config(name, "c1"), actor="t").id
        model = create_model(session, model_config(f"m-{name}", dataset, **model_extra), actor="t")
        run = create_run(session, model.id, actor="t")
        finish_run(session, run.id, status="succeeded", actor="t")
        return run.id


def test_a_decision_needs_a_reason_a_user_and_an_evaluated_run(engine: Engine) -> None:
    run_id = evaluated_run(engine)
    with session_scope(engine) as session:
        with pytest.raises(ConfigValidationError, match="description"):
            decide(session, run_id, "approved", user="dr.ada", reason="  ", channel="api")
        with pytest.raises(ConfigValidationError, match="user"):
            decide(session, run_id, "approved", user=None, reason="ok", channel="api")
        with pytest.raises(PermissionDeniedError, match="reserved"):
            decide(session, run_id, "approved", user="system", reason="ok", channel="api")
    with session_scope(engine) as session:
        model_id = get_run(session, run_id).model_id
        running = create_run(session, model_id, actor="t").id
    with session_scope(engine) as session, pytest.raises(ConflictError, match="evaluation"):
        decide(session, running, "approved", user="dr.ada", reason="ok", channel="api")


def test_approvers_list_is_enforced(engine: Engine) -> None:
    run_id = evaluated_run(engine, approvalPolicy={"approvers": ["dr.ada", "dr.bob"]})
    with session_scope(engine) as session, pytest.raises(PermissionDeniedError, match=r"dr\.ada"):
        decide(session, run_id, "approved", user="mallory", reason="fine", channel="api")
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Approval)) == 0
        decide(session, run_id, "rejected", user="dr.bob", reason="worse recall", channel="api")
        assert approval_status(session, get_run(session, run_id)) == "rejected"
    with session_scope(engine) as session, pytest.raises(ConflictError, match="already rejected"):
        decide(session, run_id, "approved", user="dr.ada", reason="overrule", channel="api")


def test_request_approval_keeps_the_first_deadline(engine: Engine) -> None:
    run_id = evaluated_run(engine)
    with session_scope(engine) as session:
        request_approval(session, run_id, timeout_hours=2)
        assert approval_status(session, get_run(session, run_id)) == "pending"
    with session_scope(engine) as session:
        first = get_run(session, run_id).approval_deadline
    with session_scope(engine) as session:
        assert request_approval(session, run_id, timeout_hours=9).approval_deadline == first


def test_two_concurrent_decisions_exactly_one_wins(engine: Engine) -> None:
    run_id = evaluated_run(engine)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def attempt(user: str, decision: str) -> None:
        barrier.wait()
        try:
            with session_scope(engine) as session:
                decide(
                    session, run_id, decision, user=user, reason=f"{user} decides", channel="api"
                )  # type: ignore[arg-type]
            outcomes[user] = "won"
        except ConflictError:
            outcomes[user] = "refused"

    threads = [
        threading.Thread(target=attempt, args=("dr.ada", "approved")),
        threading.Thread(target=attempt, args=("dr.bob", "rejected")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes.values()) == ["refused", "won"]
    with session_scope(engine) as session:
        decisions = session.scalars(select(Approval).where(Approval.run_id == run_id)).all()
        assert len(decisions) == 1
        winner = next(u for u, o in outcomes.items() if o == "won")
        assert decisions[0].user == winner


AUTO = {"enabled": True, "minImprovement": 0.02, "requireSameLabels": True}


@pytest.mark.parametrize(
    ("challenger", "champion", "labels_changed", "expected"),
    [
        ({"balancedAccuracy": 0.90, "auroc": 0.95}, {"balancedAccuracy": 0.87, "auroc": 0.95},
         False, {"improvement": True, "sameLabels": True, "guardrail:auroc": True}),
        ({"balancedAccuracy": 0.88, "auroc": 0.95}, {"balancedAccuracy": 0.87, "auroc": 0.95},
         False, {"improvement": False, "sameLabels": True, "guardrail:auroc": True}),
        ({"balancedAccuracy": 0.95, "auroc": 0.90}, {"balancedAccuracy": 0.87, "auroc": 0.95},
         False, {"improvement": True, "sameLabels": True, "guardrail:auroc": False}),
        ({"balancedAccuracy": 0.95, "auroc": 0.95}, {"balancedAccuracy": 0.87, "auroc": 0.95},
         True, {"improvement": True, "sameLabels": False, "guardrail:auroc": True}),
    ],
)  # fmt: skip
def test_policy_criteria(
    challenger: dict[str, float],
    champion: dict[str, float],
    labels_changed: bool,
    expected: dict[str, bool],
) -> None:
    auto = {**AUTO, "guardrails": [{"metric": "auroc", "maxRegression": 0.01}]}
    outcome = check_policy(
        auto,
        metric="balancedAccuracy",
        challenger=challenger,
        champion=champion,
        labels_changed=labels_changed,
    )
    assert {c["name"]: c["passed"] for c in outcome.criteria} == expected
    assert outcome.passed is all(expected.values())


def test_policy_on_a_minimised_metric_and_without_champion() -> None:
    auto = {"enabled": True, "minImprovement": 0.05}
    better = check_policy(auto, metric="logLoss", challenger={"logLoss": 0.30},
                          champion={"logLoss": 0.40}, labels_changed=False)  # fmt: skip
    assert better.passed
    first = check_policy(auto, metric="logLoss", challenger={"logLoss": 0.3}, champion=None,
                         labels_changed=False)  # fmt: skip
    assert not first.passed and first.criteria[0]["name"] == "champion"
    assert policy_metric({}, "validation:loss", "imgSeg") == "meanDice"
    assert policy_metric({}, "auroc", "imgClf") == "auroc"
