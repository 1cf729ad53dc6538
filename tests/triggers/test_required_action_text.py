"""The text Patient ML puts into Airflow's Required Actions (HITL details) and the decisions it
records shows every metric value with the same precision (issue 31: 0.03804 next to 0.942)."""

from __future__ import annotations

import re
from typing import Any

from patient_ml.config.models import NonInferiorityRule
from patient_ml.evaluation.noninferiority import Stratum, check_rules
from patient_ml.services.auto_approval import check_policy
from patient_ml.triggers.required_action import body_of

# A decimal number as the text prints it (run ids and dates have no decimal point).
NUMBER = re.compile(r"(?<![\w.])[+-]?\d+\.(\d+)(?![\w.])")


def decimals(text: str) -> set[int]:
    return {len(m.group(1)) for m in NUMBER.finditer(text)}


def test_the_required_action_body_shows_three_decimals_throughout() -> None:
    rules = check_rules(
        [NonInferiorityRule(metric="balancedAccuracy", margin=0.03804)],
        [
            Stratum(
                name="overall",
                kind="overall",
                challenger={"balancedAccuracy": 0.94213},
                champion={"balancedAccuracy": 0.93},
                differences={"balancedAccuracy": {"value": 0.01213, "low": -0.0101, "high": 0.03}},
            )
        ],
        lambda name: "maximize",
    )
    run: dict[str, Any] = {
        "id": "r1",
        "snapshotId": "s" * 64,
        "metrics": {
            "challenger": [
                {
                    "name": "accuracy",
                    "value": 0.942,
                    "stage": "evaluation",
                    "low": 0.9,
                    "high": 0.97,
                },
                {"name": "expectedCalibrationError", "value": 0.03804, "stage": "evaluation"},
            ],
            "champion": [{"name": "accuracy", "value": 0.93125, "stage": "evaluation"}],
        },
        "evaluation": {
            "deltas": {"accuracy": {"delta": 0.01075, "low": -0.01, "high": 0.0312}},
            "operatingPoints": {
                "challenger": {
                    "threshold": 0.41234,
                    "rule": "youden",
                    "positiveLabel": {"name": "t"},
                }
            },
        },
        "gate": {
            "rules": [{"metric": r.metric, "passed": r.passed, "detail": r.detail} for r in rules],
        },
    }
    body = body_of(run, "brain-clf", ["dr-approver"], "2026-12-07 10:00")
    assert "0.038 " in body and "0.942 " in body and "0.03804" not in body
    assert decimals(body) == {3}, body


def test_the_automatic_policys_criteria_show_three_decimals() -> None:
    auto = {
        "enabled": True,
        "minImprovement": 0.01,
        "minValue": 0.5,
        "guardrails": [{"metric": "auroc", "maxRegression": 0.01}],
    }
    outcome = check_policy(
        auto,
        metric="balancedAccuracy",
        challenger={"balancedAccuracy": 0.94213, "auroc": 0.97104},
        champion={"balancedAccuracy": 0.90409, "auroc": 0.96},
        labels_changed=False,
    )
    text = "; ".join(c["detail"] for c in outcome.criteria)
    assert decimals(text) == {3}, text
