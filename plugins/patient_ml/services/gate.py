"""The change-control gate of a run: what an approver must know, and what approving it takes.

- **Non-inferiority rules** (`approvalPolicy.nonInferiority`, `evaluation.noninferiority`),
  checked on the run's test evaluation: overall now, per subgroup once the evaluation reports
  subgroup strata (`evaluation.subgroups`: `[{name, images, clusters, small, challenger,
  champion, differences}]`).
- **The objective**: whether the challenger is worse than the champion on the policy's metric
  (the objective when it is a platform metric, else `autoApproval.metric`, else balanced
  accuracy / mean Dice), by its point estimate.
- **An override** is required to approve when a rule fails or the challenger is worse on the
  objective: a person must confirm it with its own justification; it is recorded and audited
  as an override (`services.approvals.decide`). The automatic policy never approves then.
- **A twin of a rejected run**: a run with the same snapshot, hyperparameters and training
  image as a run someone rejected is flagged (the automatic policy declines it too).
- **Approvals so far** against `approvalPolicy.minApprovers` (`services.approval_state`).

The gate is computed from what is stored (the run's evaluation and the model's current
policy) whenever it is read, and kept with each decision (`criteria.gate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_ml.config.models import ApprovalPolicy
from patient_ml.config.platform_metrics import (
    PLATFORM_METRICS,
    direction_of,
    metric_text,
    plain_name,
)
from patient_ml.db.models import Model, Run
from patient_ml.db.require import present
from patient_ml.evaluation.noninferiority import OVERALL, RuleResult, Stratum, check_rules
from patient_ml.services.approval_state import (
    Progress,
    decisions_of,
    min_approvers_of,
    progress,
    settled,
)
from patient_ml.services.common import to_millis

DEFAULT_METRIC = {"imgClf": "balancedAccuracy", "imgSeg": "meanDice"}
WORSE_EPSILON = 1e-12


def policy_metric(auto: dict[str, Any], objective: str, problem_type: str) -> str:
    """The platform metric the policy judges improvement on."""
    if auto.get("metric"):
        return str(auto["metric"])
    if objective in PLATFORM_METRICS:
        return objective
    return DEFAULT_METRIC[problem_type]


def better_by(name: str, challenger: float, champion: float) -> float:
    """How much the challenger beats the champion on `name` (negative: it is worse)."""
    sign = 1.0 if direction_of(name) == "maximize" else -1.0
    return sign * (challenger - champion)


@dataclass(frozen=True)
class Gate:
    evaluated: bool
    champion_id: str | None
    rules: list[RuleResult] = field(default_factory=list)
    objective: dict[str, Any] | None = None
    twins: list[dict[str, Any]] = field(default_factory=list)
    approvals: Progress = field(default_factory=lambda: Progress(1, ()))

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]

    @property
    def worse_on_objective(self) -> bool:
        return bool(self.objective and self.objective.get("worse"))

    @property
    def override_required(self) -> bool:
        return bool(self.failed) or self.worse_on_objective

    def reasons(self) -> list[str]:
        """Why an override is required, one sentence each (empty: it is not)."""
        found = [f"fails non-inferiority: {r.detail}" for r in self.failed]
        if self.worse_on_objective and self.objective is not None:
            found.append(f"is worse on the objective: {self.objective['detail']}")
        return found

    def wire(self) -> dict[str, Any]:
        return {
            "evaluated": self.evaluated,
            "championId": self.champion_id,
            "rules": [r.wire() for r in self.rules],
            "passed": not self.failed,
            "objective": self.objective,
            "overrideRequired": self.override_required,
            "overrideReasons": self.reasons(),
            "duplicateOfRejected": self.twins,
            "approvals": self.approvals.wire(),
        }

    def summary(self) -> dict[str, Any]:
        """What a decision keeps of the gate (`criteria.gate`)."""
        return {
            "rules": [{k: v for k, v in r.wire().items() if k in _KEPT} for r in self.rules],
            "objective": self.objective,
            "overrideRequired": self.override_required,
            "duplicateOfRejected": [t["runId"] for t in self.twins],
        }


_KEPT = ("metric", "margin", "scope", "stratum", "passed", "difference", "low", "high")


def strata_of(evaluation: dict[str, Any]) -> list[Stratum]:
    """The overall stratum from the evaluation's paired deltas, then any subgroup strata the
    evaluation reports (`evaluation["subgroups"]`)."""
    deltas = evaluation.get("deltas") or {}
    strata = [
        Stratum(
            name=OVERALL,
            kind="overall",
            challenger={k: v["challenger"] for k, v in deltas.items()},
            champion={k: v["champion"] for k, v in deltas.items()},
            differences={
                k: {"value": v.get("delta"), "low": v.get("low"), "high": v.get("high")}
                for k, v in deltas.items()
            },
            images=evaluation.get("testExamples"),
            clusters=evaluation.get("testClusters"),
        )
    ]
    for group in evaluation.get("subgroups") or []:
        strata.append(
            Stratum(
                name=str(group["name"]),
                kind="subgroup",
                challenger=group.get("challenger") or {},
                champion=group.get("champion") or {},
                differences=group.get("differences") or {},
                images=group.get("images"),
                clusters=group.get("clusters"),
                small=bool(group.get("small")),
            )
        )
    return strata


def _objective(run: Run, policy: ApprovalPolicy) -> dict[str, Any] | None:
    evaluation = run.evaluation or {}
    problem_type = run.config["problemDefinition"]["problemType"]
    objective = run.config["trainingApproach"]["objective"]["metric"]
    metric = policy_metric(policy.auto_approval.to_wire(), objective, problem_type)
    found = (evaluation.get("deltas") or {}).get(metric)
    if found is None:
        return None
    gain = better_by(metric, found["challenger"], found["champion"])
    low, high = found.get("low"), found.get("high")
    interval = (
        f" [{metric_text(low, signed=True)}, {metric_text(high, signed=True)}]"
        if low is not None and high is not None
        else ""
    )
    worse = gain < -WORSE_EPSILON
    difference = found["challenger"] - found["champion"]
    return {
        "metric": metric,
        "title": plain_name(metric),
        "challenger": found["challenger"],
        "champion": found["champion"],
        "difference": difference,
        "low": low,
        "high": high,
        "worse": worse,
        "detail": f"{plain_name(metric)}: challenger {metric_text(found['challenger'])} vs "
        f"champion {metric_text(found['champion'])} (challenger - champion "
        f"{metric_text(difference, signed=True)}{interval}); "
        + ("worse" if worse else "not worse"),
    }


def rejected_twins(session: Session, run: Run) -> list[dict[str, Any]]:
    """Runs rejected by a person or the policy that had this run's snapshot, hyperparameters
    and training image (any model: the same training)."""
    if not run.snapshot_id or not run.hyperparameters:
        return []
    image = run.config["trainingApproach"]["trainingImage"]
    mine = _hyperparameters(run)
    found = []
    others = session.scalars(
        select(Run)
        .where(Run.snapshot_id == run.snapshot_id, Run.id != run.id)
        .order_by(Run.started_at)
    )
    for other in others:
        if other.config["trainingApproach"]["trainingImage"] != image:
            continue
        if _hyperparameters(other) != mine:
            continue
        model = session.get(Model, other.model_id)
        decided = settled(decisions_of(session, other.id), min_approvers_of(model))
        if decided is None or decided.decision != "rejected":
            continue
        found.append(
            {
                "runId": other.id,
                "slug": other.slug,
                "modelId": other.model_id,
                "rejectedBy": decided.user or decided.actor,
                "rejectedAt": to_millis(decided.decided_at),
                "description": decided.description,
            }
        )
    return found


def _hyperparameters(run: Run) -> dict[str, str]:
    return {str(h["name"]): str(h["value"]) for h in run.hyperparameters or []}


def gate_for(session: Session, run: Run, model: Model | None = None) -> Gate:
    """The run's gate under its model's current approval policy."""
    model = model or present(session.get(Model, run.model_id), f"model of run {run.id}")
    policy = ApprovalPolicy.model_validate(model.approval_policy or {})
    decided = decisions_of(session, run.id)
    approvals = progress(decided, min_approvers_of(model))
    evaluation = run.evaluation
    if not evaluation:
        return Gate(False, run.champion_id, approvals=approvals)
    champion = evaluation.get("championId")
    twins = rejected_twins(session, run)
    if not champion:
        return Gate(True, None, twins=twins, approvals=approvals)
    rules = check_rules(policy.non_inferiority, strata_of(evaluation), direction_of)
    return Gate(True, champion, rules, _objective(run, policy), twins, approvals)
