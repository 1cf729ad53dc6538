"""The optional automatic approval policy of a model (a predetermined change-control plan).

The run is approved as actor `system` only when every stated criterion holds on the platform's
test metrics, every non-inferiority rule of the policy holds (`services.gate`: the lower end of
each paired interval above -margin), and the run does not repeat a rejected run; the decision
records each criterion with its numbers. When one fails, nothing is decided: an audit event
lists the criteria and a human decides (past a failed rule only with an explicit override).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from patient_ml.config.platform_metrics import direction_of, metric_text
from patient_ml.db.models import Approval, Model
from patient_ml.db.require import present
from patient_ml.services import audit
from patient_ml.services.approvals import SYSTEM, decide
from patient_ml.services.evaluations import evaluation_metrics
from patient_ml.services.gate import DEFAULT_METRIC, Gate, gate_for, policy_metric
from patient_ml.services.runs import get_run

__all__ = ["DEFAULT_METRIC", "PolicyOutcome", "check_policy", "policy_metric", "try_auto_approve"]


@dataclass(frozen=True)
class PolicyOutcome:
    passed: bool
    criteria: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"policy": "autoApproval", "passed": self.passed, "criteria": self.criteria}


def _better_by(name: str, challenger: float, champion: float) -> float:
    """How much the challenger beats the champion on `name` (negative: it is worse)."""
    sign = 1.0 if direction_of(name) == "maximize" else -1.0
    return sign * (challenger - champion)


def check_policy(
    auto: dict[str, Any],
    *,
    metric: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    labels_changed: bool,
) -> PolicyOutcome:
    criteria: list[dict[str, Any]] = []

    def add(name: str, passed: bool, detail: str) -> None:
        criteria.append({"name": name, "passed": passed, "detail": detail})

    value = challenger.get(metric)
    if value is None:
        add("metric", False, f"the challenger has no test metric {metric!r}")
        return PolicyOutcome(False, criteria)
    if champion is None:
        allowed = bool(auto.get("allowWithoutChampion"))
        add(
            "champion",
            allowed,
            "no champion; allowWithoutChampion is "
            + ("on" if allowed else "off, so a first run waits for a human"),
        )
    else:
        base = champion.get(metric)
        needed = float(auto.get("minImprovement") or 0.0)
        if base is None:
            add("improvement", False, f"the champion has no test metric {metric!r}")
        else:
            gain = _better_by(metric, value, base)
            add(
                "improvement",
                gain >= needed - 1e-12,
                f"{metric}: challenger {metric_text(value)} vs champion {metric_text(base)} "
                f"(better by {metric_text(gain, signed=True)}; needs >= {metric_text(needed)})",
            )
        if auto.get("requireSameLabels", True):
            add(
                "sameLabels",
                not labels_changed,
                "label set changed since the champion" if labels_changed else "same label set",
            )
    floor = auto.get("minValue")
    if floor is not None:
        ok = value >= floor if direction_of(metric) == "maximize" else value <= floor
        add(
            "minValue",
            ok,
            f"{metric}: {metric_text(value)} vs required {metric_text(float(floor))}",
        )
    for guard in auto.get("guardrails") or []:
        name, limit = guard["metric"], float(guard.get("maxRegression") or 0.0)
        mine = challenger.get(name)
        theirs = champion.get(name) if champion else None
        if mine is None:
            add(f"guardrail:{name}", False, f"the challenger has no test metric {name!r}")
        elif theirs is None:
            add(
                f"guardrail:{name}",
                True,
                f"{name}: {metric_text(mine)} (no champion value to compare)",
            )
        else:
            regression = -_better_by(name, mine, theirs)
            add(
                f"guardrail:{name}",
                regression <= limit + 1e-12,
                f"{name}: challenger {metric_text(mine)} vs champion {metric_text(theirs)} "
                f"(regression {metric_text(max(regression, 0.0))}; allowed {metric_text(limit)})",
            )
    return PolicyOutcome(all(c["passed"] for c in criteria), criteria)


def gate_criteria(gate: Gate) -> list[dict[str, Any]]:
    """The gate's part of the automatic policy: each non-inferiority rule, and that the run
    does not repeat a rejected run."""
    found = [
        {"name": f"nonInferiority:{r.metric}@{r.stratum}", "passed": r.passed, "detail": r.detail}
        for r in gate.rules
    ]
    if gate.twins:
        first = gate.twins[0]
        found.append(
            {
                "name": "notRejectedBefore",
                "passed": False,
                "detail": f"same snapshot, hyperparameters and training image as run "
                f"{first['slug']} ({first['runId']}), rejected by {first['rejectedBy']}",
            }
        )
    return found


def try_auto_approve(session: Session, run_id: str) -> tuple[Approval | None, PolicyOutcome | None]:
    """Approve as `system` when the model's policy is on and holds; (None, outcome) when it
    fails; (None, None) when the model has no automatic policy."""
    run = get_run(session, run_id)
    model = session.get(Model, run.model_id)
    model = present(model, f"model of run {run_id}")
    auto = (model.approval_policy or {}).get("autoApproval") or {}
    if not auto.get("enabled"):
        return None, None
    problem_type = run.config["problemDefinition"]["problemType"]
    metric = policy_metric(auto, run.config["trainingApproach"]["objective"]["metric"],
                           problem_type)  # fmt: skip
    evaluation = run.evaluation or {}
    champion = evaluation_metrics(session, run_id, "champion") if run.champion_id else None
    outcome = check_policy(
        auto,
        metric=metric,
        challenger=evaluation_metrics(session, run_id, "challenger"),
        champion=champion,
        labels_changed=bool(evaluation.get("labelsChanged")),
    )
    extra = gate_criteria(gate_for(session, run, model))
    if extra:
        criteria = outcome.criteria + extra
        outcome = PolicyOutcome(all(c["passed"] for c in criteria), criteria)
    if not outcome.passed:
        audit.record(
            session,
            actor=SYSTEM,
            action="run.auto_approval.declined",
            entity_type="run",
            entity_id=run_id,
            after=outcome.as_dict(),
        )
        return None, outcome
    summary = "; ".join(c["detail"] for c in outcome.criteria)
    approval = decide(
        session,
        run_id,
        "approved",
        user=None,
        reason=f"Automatic approval policy: every criterion holds ({summary}).",
        actor="system",
        channel="system",
        criteria=outcome.as_dict(),
    )
    return approval, outcome
