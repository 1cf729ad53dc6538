import { describe, expect, it } from "vitest";

import type { Run } from "./api";
import {
  approvalState,
  atPointOf,
  compareMetrics,
  describeDelta,
  describeNextRun,
  describeOperatingPoint,
  describeResampling,
  describeTestSet,
  explainAtPoint,
  formatDelta,
  formatInterval,
  formatParam,
  formatTime,
  metricTitle,
  operatingPointRows,
  parseView,
  viewSearch,
} from "./format";

function run(overrides: Partial<Run> = {}): Run {
  return {
    id: "r1",
    slug: "calm-otter-1",
    modelId: "m1",
    status: "succeeded",
    metrics: { challenger: [], champion: [] },
    approvals: [],
    approvalStatus: "pending",
    ...overrides,
  } as unknown as Run; // the fields these tests read
}

describe("compareMetrics", () => {
  it("pairs challenger and champion on each evaluation metric, with direction-aware deltas", () => {
    const rows = compareMetrics(
      run({
        metrics: {
          challenger: [
            { name: "accuracy", value: 0.9, stage: "evaluation", direction: "maximize" },
            { name: "logLoss", value: 0.3, stage: "evaluation", direction: "minimize" },
            { name: "loss", value: 0.1, stage: "training", direction: "minimize" },
          ],
          champion: [
            { name: "accuracy", value: 0.8, stage: "evaluation", direction: "maximize" },
            { name: "logLoss", value: 0.2, stage: "evaluation", direction: "minimize" },
          ],
        },
      }),
    );
    expect(rows.map((r) => r.name)).toEqual(["accuracy", "logLoss"]); // training metrics left out
    expect(rows[0].delta).toBeCloseTo(0.1);
    expect(rows[0].better).toBe(true);
    expect(rows[1].delta).toBeCloseTo(0.1);
    expect(rows[1].better).toBe(false); // a higher log loss is worse
  });

  it("has no delta on a first run (no champion)", () => {
    const rows = compareMetrics(
      run({ metrics: { challenger: [{ name: "accuracy", value: 0.9, stage: "evaluation" }], champion: [] } }),
    );
    expect(rows).toEqual([{ name: "accuracy", challenger: 0.9, direction: undefined, description: undefined }]);
    expect(formatDelta(rows[0].delta)).toBe("—");
  });
});

describe("formatDelta", () => {
  it("signs the difference", () => {
    expect(formatDelta(0.0123)).toBe("+0.012");
    expect(formatDelta(-0.5)).toBe("−0.500");
    expect(formatDelta(0)).toBe("±0.000");
    expect(formatDelta(-0.0002)).toBe("±0.000"); // never "−0.000"
  });
});

describe("intervals", () => {
  const resampling = { method: "cluster bootstrap", unit: "cluster" as const, level: 0.95, resamples: 2000, seed: 0, images: 449, clusters: 101 };

  function evaluated(low: number, high: number, direction: "maximize" | "minimize" = "maximize") {
    return compareMetrics(
      run({
        metrics: {
          challenger: [{ name: "balancedAccuracy", value: 0.912, stage: "evaluation", direction, low: 0.88, high: 0.939 }],
          champion: [{ name: "balancedAccuracy", value: 0.903, stage: "evaluation", direction, low: 0.87, high: 0.93 }],
        },
        evaluation: {
          testExamples: 449,
          testClusters: 101,
          resampling,
          deltas: { balancedAccuracy: { challenger: 0.912, champion: 0.903, delta: 0.009, improved: true, low, high } },
        },
      }),
    )[0];
  }

  it("carries each contender's interval and the paired interval of the difference", () => {
    const row = evaluated(-0.01, 0.028);
    expect(row.challengerInterval).toEqual([0.88, 0.939]);
    expect(row.championInterval).toEqual([0.87, 0.93]);
    expect(row.deltaInterval).toEqual([-0.01, 0.028]);
    expect(formatInterval(row.challengerInterval)).toBe("[0.880, 0.939]");
    expect(formatInterval(row.deltaInterval, true)).toBe("[−0.010, +0.028]");
  });

  it("calls a difference better or worse only when its interval leaves 0 out", () => {
    expect(evaluated(-0.01, 0.028).better).toBeUndefined();
    expect(describeDelta(evaluated(-0.01, 0.028))).toBe("no clear difference");
    expect(evaluated(0.002, 0.028).better).toBe(true);
    expect(describeDelta(evaluated(0.002, 0.028))).toBe("better");
    expect(evaluated(-0.03, -0.001).better).toBe(false);
    expect(evaluated(-0.03, -0.001, "minimize").better).toBe(true); // lower log loss is better
  });

  it("counts images and independent clusters, and says what a cluster is", () => {
    expect(describeTestSet({ testExamples: 449, testClusters: 101 })).toBe("449 test images · 101 independent clusters");
    expect(describeTestSet({ testExamples: 12 })).toBe("12 test images"); // evaluated before clusters
    expect(describeTestSet(undefined)).toBe("");
    expect(describeResampling({ resampling, clusterField: "cluster" })).toMatch(
      /95 % intervals from 2,000 resamples of the independent clusters \(a cluster is a patient, or a group of copies/,
    );
    expect(describeResampling({ resampling, clusterField: "patientKey" })).toMatch(/predates copy groups/);
    expect(describeResampling({ resampling: { ...resampling, clusters: 12 } })).toMatch(/rough/);
    expect(describeResampling({ testExamples: 3 })).toBe("");
  });

  it("names metrics in plain words", () => {
    expect(metricTitle("balancedAccuracy")).toBe("Balanced accuracy");
    expect(metricTitle("expectedCalibrationError")).toBe("Calibration error (ECE)");
    expect(metricTitle("recall:tumor")).toBe("Recall (sensitivity) — tumor");
    expect(metricTitle("dice:lesion")).toBe("Dice — lesion");
    expect(metricTitle("validation:loss")).toBe("validation:loss");
  });
});

describe("approvalState", () => {
  it("lets an approver decide a pending, evaluated run", () => {
    expect(approvalState(run(), null, true)).toEqual({ blocker: null });
  });

  it("tells a user who may not decide why, in the API's words", () => {
    const state = approvalState(run(), null, false, "User 'viewer' may not edit the DAG patient_ml__x.");
    expect(state.blocker).toContain("viewer");
  });

  it("refuses running, failed and timed-out runs", () => {
    expect(approvalState(run({ status: "running" }), null, true).blocker).toMatch(/still running/);
    expect(approvalState(run({ status: "failed" }), null, true).blocker).toMatch(/failed/);
    expect(approvalState(run({ approvalStatus: "timedOut" }), null, true).blocker).toMatch(/timed out/);
  });

  it("refuses a second decision; an earlier champion comes back through a rollback", () => {
    const decided = run({ approvals: [{ decision: "rejected", actor: "user", user: "dr-a", timestamp: 0 }] });
    expect(approvalState(decided, null, true).blocker).toMatch(/Already rejected by dr-a/);
    const earlierChampion = run({ approvals: [{ decision: "approved", actor: "user", user: "dr-a" }] });
    expect(approvalState(earlierChampion, "r2", true).blocker).toMatch(/Already approved.*rollback/);
    expect(approvalState(earlierChampion, "r1", true).blocker).not.toMatch(/rollback/);
  });
});

describe("views", () => {
  it("reads the page Airflow's tab asks for", () => {
    expect(parseView("?view=run&dagId=patient_ml__a&dagRunId=manual__1")).toEqual({
      kind: "run",
      dagId: "patient_ml__a",
      dagRunId: "manual__1",
      modelId: undefined,
      runId: undefined,
      tab: undefined,
    });
    expect(parseView("")).toEqual({ kind: "models" });
  });

  it("round-trips through the query string", () => {
    const view = { kind: "model" as const, modelId: "m1", tab: "metrics" };
    expect(parseView(viewSearch(view))).toEqual({ ...view, dagId: undefined });
  });
});

describe("formatParam", () => {
  it("shortens fractions, keeps integers and text", () => {
    expect(formatParam(0.08600813697916544)).toBe("0.08601");
    expect(formatParam("0.007064152340112098")).toBe("0.007064");
    expect(formatParam(39)).toBe("39");
    expect(formatParam("64")).toBe("64");
    expect(formatParam("adam")).toBe("adam");
    expect(formatParam(undefined)).toBe("—");
  });
});

describe("describeNextRun", () => {
  it("says when, or why there is no next run: never a blank cell", () => {
    const at = Date.UTC(2031, 0, 5, 2);
    expect(describeNextRun({ state: "scheduled", at, schedule: "0 2 * * 0" })).toEqual({
      text: formatTime(at),
      detail: "Schedule: 0 2 * * 0.",
      muted: false,
    });
    expect(describeNextRun({ state: "manual" }).text).toBe("manual");
    expect(describeNextRun({ state: "onAssets", schedule: "Asset" }).text).toBe("on drift");
    expect(describeNextRun({ state: "paused", schedule: "@daily" })).toMatchObject({ text: "paused", detail: expect.stringContaining("@daily") });
    expect(describeNextRun({ state: "ended" }).text).toBe("none");
    expect(describeNextRun({ state: "notInAirflow" }).text).toBe("not in Airflow");
    for (const state of ["scheduled", "manual", "onAssets", "paused", "ended", "notInAirflow"] as const) {
      expect(describeNextRun({ state, at }).text).not.toBe("");
    }
  });
});

describe("operating point", () => {
  const withPoint = run({
    metrics: {
      challenger: [
        { name: "sensitivity:tumor", value: 0.86, stage: "evaluation", low: 0.8, high: 0.91, direction: "maximize" },
        { name: "npv:tumor", value: 0.9, stage: "evaluation", direction: "maximize" },
        { name: "auroc", value: 0.95, stage: "evaluation", direction: "maximize" },
      ],
      champion: [{ name: "sensitivity:tumor", value: 0.91, stage: "evaluation", direction: "maximize" }],
    },
    evaluation: { deltas: { "sensitivity:tumor": { challenger: 0.86, champion: 0.91, delta: -0.05, improved: false, low: -0.09, high: -0.01 } } },
  });

  it("picks the measures at the point, in reading order, with the paired interval", () => {
    const rows = operatingPointRows(withPoint);
    expect(rows.map((r) => r.name)).toEqual(["sensitivity:tumor", "npv:tumor"]);
    expect(rows[0]).toMatchObject({ family: "sensitivity", label: "tumor", deltaInterval: [-0.09, -0.01], better: false });
    expect(atPointOf("auroc")).toBeUndefined();
    expect(atPointOf("ppv:a:b")).toEqual(["ppv", "a:b"]);
  });

  it("says in plain words what decides and how it was chosen", () => {
    const { decision, chosen } = describeOperatingPoint({
      rule: "targetSensitivity",
      positiveLabel: { index: 1, name: "tumor" },
      threshold: 0.4123,
      target: 0.95,
      chosenOn: { split: "validation", images: 80, positives: 40, negatives: 40, sensitivity: 0.95, specificity: 0.7 },
    });
    expect(decision).toBe("tumor when its confidence is at least 0.412; otherwise the most confident other label.");
    expect(chosen).toContain("the highest threshold that reaches the target sensitivity (95 %)");
    expect(chosen).toContain("sensitivity 0.950 and specificity 0.700 on 80 validation images (40 tumor)");
    expect(describeOperatingPoint({ rule: "argmax", note: "no operating point is stored" }).chosen).toBe(
      "No operating point is stored.",
    );
    expect(explainAtPoint("ppv", "tumor")).toBe("Of the images the model calls tumor, the share that are tumor.");
    expect(metricTitle("npv:tumor")).toBe("Negative predictive value (NPV) — tumor");
  });
});

describe("approvalState under the two-person rule", () => {
  const partial = run({
    approvals: [
      {
        decision: "approved",
        actor: "user",
        user: "dr-a",
        criteria: { approvals: { required: 2, approvedBy: ["dr-a"], remaining: 1, complete: false } },
      },
    ],
  });

  it("lets another person decide after a partial approval, not the same one", () => {
    expect(approvalState(partial, null, true, null, "dr-b")).toEqual({ blocker: null });
    expect(approvalState(partial, null, true, null, "dr-a").blocker).toMatch(/approved this run already; 1 more/);
  });
});
