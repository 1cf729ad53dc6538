"""The `monitoring` section of a model config (extension): how the deployed champion is
watched and how long its prediction log is kept. Cross-field rules live in
`patient_ml.config.rules.check_monitoring`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from patient_ml.config.wire import WireModel

# a subgroup attribute's name (as config.models.SUBGROUP_ATTRIBUTE)
AttributeName = Annotated[str, StringConstraints(pattern=r"^[a-z][A-Za-z0-9]{0,39}$")]


class InputDriftThresholds(WireModel):
    """Extension: when the served images' statistics count as drifted from the reference."""

    method: Literal["ks", "psi"] = Field(
        "ks",
        description="ks: two-sample Kolmogorov-Smirnov test per statistic; psi: population "
        "stability index over the reference's deciles.",
    )
    alpha: float = Field(
        0.001,
        gt=0,
        lt=0.5,
        description="ks: family-wise significance level over the 5 statistics "
        "(Bonferroni: a statistic drifts when its p-value < alpha/5).",
    )
    max_psi: float = Field(
        0.25, gt=0, le=10, description="psi: a statistic drifts when its PSI exceeds this."
    )


class PredictionDriftThresholds(WireModel):
    """Extension: when the served outputs count as drifted from the reference (imgClf)."""

    alpha: float = Field(
        0.001,
        gt=0,
        lt=0.5,
        description="Significance level of the chi-square test of the predicted-label shares "
        "and of the KS test of the top confidence.",
    )
    max_confidence_drop: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Largest fall of the mean top confidence against the reference that is "
        "not a breach (with a significant KS test).",
    )


class FeatureDriftThresholds(WireModel):
    """Extension: when the served images' texture and sharpness descriptor
    (`patient_ml.monitoring.features`: what a blur, a lower resolution, noise or a
    recompression changes) counts as drifted from the reference: a multivariate two-sample
    test (maximum mean discrepancy with a permutation p-value)."""

    enabled: bool = Field(True, description="Run the feature-drift test.")
    alpha: float = Field(
        0.01,
        gt=0,
        lt=0.5,
        description="Significance level of the permutation test (its p-value is at least "
        "1/(permutations + 1)).",
    )
    permutations: int = Field(
        500, ge=99, le=10_000, description="Permutations of the test (more: finer p-values)."
    )


class LivePerformanceThresholds(WireModel):
    """Extension: performance on served images whose confirmed labels have arrived."""

    metric: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="Platform metric (default balancedAccuracy for imgClf).",
    )
    max_regression: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Breach when the upper end of the metric's 95% bootstrap interval is "
        "below the champion's test value minus this.",
    )
    min_labelled: int = Field(
        30, ge=5, le=100_000, description="Fewer labelled predictions: no verdict."
    )


class MonitoringSettings(WireModel):
    """Extension: how the deployed champion is watched (the monitor DAG
    `patient_ml_monitor__<slug>`) and how long its prediction log is kept."""

    enabled: bool = Field(True, description="Build the monitor DAG for a cloud-deployed model.")
    schedule: str = Field(
        "@hourly",
        min_length=1,
        max_length=100,
        description="Cron expression or preset of the monitor DAG.",
    )
    window_hours: float = Field(
        24.0, gt=0, le=24 * 90, description="Predictions of the last this many hours are checked."
    )
    window_size: int = Field(
        500, ge=10, le=100_000, description="At most this many (the newest) predictions."
    )
    min_samples: int = Field(
        50,
        ge=10,
        le=100_000,
        description="Fewer predictions in the window: no verdict (status insufficient).",
    )
    input_drift: InputDriftThresholds = Field(default_factory=InputDriftThresholds)
    prediction_drift: PredictionDriftThresholds = Field(default_factory=PredictionDriftThresholds)
    feature_drift: FeatureDriftThresholds = Field(default_factory=FeatureDriftThresholds)
    live_performance: LivePerformanceThresholds = Field(default_factory=LivePerformanceThresholds)
    estimate_performance: bool = Field(
        True,
        description="Estimate the window's performance from the model's probabilities before "
        "labels arrive (CBPE); a breach when its interval lies below the champion's test value "
        "minus livePerformance.maxRegression.",
    )
    subgroups: list[AttributeName] = Field(
        default_factory=lambda: ["site", "manufacturer"],
        max_length=4,
        description="Subgroup attributes (of the dataset's curation.subgroups) whose values "
        "each get their own window and reference, so a drift at one site or on one device is "
        "not diluted by the others. A prediction carries them (its example's attributes, or "
        "those its caller names); only these are logged. Each subgroup's tests run at the "
        "check's levels divided by the number of subgroup windows tested. Empty: the whole "
        "window only.",
    )
    retrain_on_breach: bool = Field(
        False,
        description="Schedule the training DAG on the model's drift Asset (as well as on its "
        "own schedule): a breach starts a run, which is still evaluated and approved.",
    )
    retention_days: float = Field(
        90.0, gt=0, le=3660, description="Prediction log rows older than this are deleted."
    )
    max_log_rows: int = Field(
        100_000,
        ge=100,
        le=100_000_000,
        description="At most this many prediction log rows per model (the oldest go first).",
    )
