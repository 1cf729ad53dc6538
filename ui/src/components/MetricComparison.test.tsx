import { ChakraProvider } from "@chakra-ui/react";
import { cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";

import type { Run } from "../api";
import { system } from "../theme";
import { MetricComparisonTable } from "./MetricComparison";

const base = {
  id: "r2",
  slug: "calm-otter-2",
  modelId: "m1",
  status: "succeeded",
  metrics: { challenger: [], champion: [] },
  approvals: [],
  approvalStatus: "pending",
} as unknown as Run; // the fields these tests read

function show(run: Run) {
  render(
    <ChakraProvider value={system}>
      <MetricComparisonTable run={run} />
    </ChakraProvider>,
  );
}

afterEach(cleanup);

describe("MetricComparisonTable", () => {
  it("shows values with intervals, the paired difference and the independent clusters", () => {
    show({
      ...base,
      metrics: {
        challenger: [
          { name: "balancedAccuracy", value: 0.912, stage: "evaluation", direction: "maximize", low: 0.88, high: 0.939 },
          { name: "recall:tumor", value: 0.859, stage: "evaluation", direction: "maximize", low: 0.8, high: 0.91 },
        ],
        champion: [
          { name: "balancedAccuracy", value: 0.903, stage: "evaluation", direction: "maximize", low: 0.87, high: 0.93 },
          { name: "recall:tumor", value: 0.912, stage: "evaluation", direction: "maximize", low: 0.87, high: 0.95 },
        ],
      },
      evaluation: {
        testExamples: 449,
        testClusters: 101,
        clusterField: "cluster",
        testExamplesLeftOut: 3,
        resampling: { method: "cluster bootstrap", unit: "cluster", level: 0.95, resamples: 2000, seed: 0, images: 449, clusters: 101 },
        deltas: {
          balancedAccuracy: { challenger: 0.912, champion: 0.903, delta: 0.009, improved: true, low: -0.01, high: 0.028 },
          "recall:tumor": { challenger: 0.859, champion: 0.912, delta: -0.053, improved: false, low: -0.09, high: -0.02 },
        },
      },
    });
    expect(screen.getByTestId("test-set-size").textContent).toContain("449 test images · 101 independent clusters");
    expect(screen.getByTestId("left-out").textContent).toBe("3 test images left out: a copy is in train.");
    expect(screen.getByTestId("resampling").textContent).toContain("differences are paired");
    const balanced = screen.getByTestId("metric-balancedAccuracy").textContent ?? "";
    expect(balanced).toContain("Balanced accuracy");
    expect(balanced).toContain("0.912[0.880, 0.939]");
    expect(balanced).toContain("+0.009[−0.010, +0.028] no clear difference");
    const recall = screen.getByTestId("metric-recall:tumor").textContent ?? "";
    expect(recall).toContain("Recall (sensitivity) — tumor");
    expect(recall).toContain("−0.053[−0.090, −0.020] worse");
  });

  it("shows a run evaluated before intervals as it was, without brackets", () => {
    show({
      ...base,
      metrics: {
        challenger: [{ name: "accuracy", value: 0.9, stage: "evaluation", direction: "maximize" }],
        champion: [{ name: "accuracy", value: 0.8, stage: "evaluation", direction: "maximize" }],
      },
      evaluation: { testExamples: 40 },
    });
    expect(screen.getByTestId("test-set-size").textContent).toBe("40 test images");
    expect(screen.queryByTestId("resampling")).toBeNull();
    expect(screen.queryByTestId("left-out")).toBeNull();
    expect(screen.getByTestId("metric-accuracy").textContent).toBe("Accuracy0.9000.800+0.100 better");
  });

  it("says when there is no evaluation yet", () => {
    show(base);
    expect(screen.getByText("No evaluation yet.")).toBeTruthy();
  });
});
