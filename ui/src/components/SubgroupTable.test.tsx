import { ChakraProvider } from "@chakra-ui/react";
import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";

import type { Run, Subgroup } from "../api";
import { system } from "../theme";
import { clearlyWorse, formatPrevalence, SubgroupTable } from "./SubgroupTable";

function group(name: string, attrs: Record<string, string>, images: number, clusters: number, ba: [number, number, number], diff: [number, number, number], small = false): Subgroup {
  return {
    name,
    attributes: attrs,
    pair: Object.keys(attrs).length > 1,
    images,
    clusters,
    small,
    prevalence: { negative: 0.5, positive: 0.5 },
    challenger: { balancedAccuracy: ba[0], auroc: 0.9 },
    champion: { balancedAccuracy: ba[0] - diff[0], auroc: 0.88 },
    intervals: {
      challenger: { balancedAccuracy: { value: ba[0], low: ba[1], high: ba[2] }, auroc: { value: 0.9, low: 0.85, high: 0.95 } },
      champion: { balancedAccuracy: { value: ba[0] - diff[0], low: 0.8, high: 0.9 }, auroc: { value: 0.88, low: 0.8, high: 0.93 } },
    },
    differences: { balancedAccuracy: { value: diff[0], low: diff[1], high: diff[2] }, auroc: { value: 0.02, low: -0.01, high: 0.05 } },
  };
}

const run = {
  id: "r1",
  slug: "calm-otter-1",
  modelId: "m1",
  status: "succeeded",
  approvals: [],
  metrics: { challenger: [], champion: [] },
  evaluation: {
    championId: "r0",
    subgroups: [
      group("site=site-a", { site: "site-a" }, 80, 40, [0.97, 0.94, 0.99], [0.07, 0.03, 0.11]),
      group("site=site-c", { site: "site-c" }, 80, 40, [0.72, 0.65, 0.79], [-0.15, -0.26, -0.04]),
      group("sex=female & site=site-c", { sex: "female", site: "site-c" }, 40, 20, [0.7, 0.6, 0.8], [-0.1, -0.3, 0.1], true),
    ],
    subgroupSettings: { attributes: ["sex", "site"], minClusters: 30, pairs: true, missing: { sex: 4, site: 0 } },
  },
  gate: {
    evaluated: true,
    championId: "r0",
    passed: false,
    rules: [
      { metric: "balancedAccuracy", title: "Balanced accuracy", margin: 0.1, scope: "overallAndLargeSubgroups", stratum: "site=site-c", passed: false, detail: "Balanced accuracy in site=site-c: challenger - champion -0.150 [-0.260, -0.040]" },
      { metric: "balancedAccuracy", title: "Balanced accuracy", margin: 0.1, scope: "overallAndLargeSubgroups", stratum: "site=site-a", passed: true, detail: "holds" },
    ],
    objective: { metric: "balancedAccuracy", title: "Balanced accuracy", challenger: 0.9, champion: 0.88, difference: 0.02, worse: false, detail: "" },
    overrideRequired: true,
    overrideReasons: [],
    duplicateOfRejected: [],
    approvals: { required: 1, approvedBy: [], remaining: 1 },
  },
} as unknown as Run; // the fields these tests read

afterEach(cleanup);

function show(r: Run) {
  render(
    <ChakraProvider value={system}>
      <SubgroupTable run={r} />
    </ChakraProvider>,
  );
}

describe("SubgroupTable", () => {
  it("shows n and k, prevalence, both models with intervals, the paired difference and the flags", () => {
    show(run);
    const c = screen.getByTestId("subgroup-site=site-c").textContent ?? "";
    expect(c).toContain("80 img · 40 cl");
    expect(c).toContain("positive 50 %");
    expect(c).toContain("0.720[0.650, 0.790]");
    expect(c).toContain("−0.150[−0.260, −0.040]");
    expect(c).toContain("fails a rule");
    const a = screen.getByTestId("subgroup-site=site-a").textContent ?? "";
    expect(a).not.toContain("fails a rule");
    expect(a).toContain("+0.070[+0.030, +0.110]");
    const pair = screen.getByTestId("subgroup-sex=female & site=site-c").textContent ?? "";
    expect(pair).toContain("too small to conclude");
    expect(pair).not.toContain("challenger worse"); // its interval spans 0
    expect(screen.getByTestId("subgroup-missing").textContent).toContain("sex 4");
  });

  it("switches the metric", () => {
    show(run);
    fireEvent.change(screen.getByLabelText("Subgroup metric"), { target: { value: "auroc" } });
    expect(screen.getByTestId("subgroup-site=site-c").textContent).toContain("0.900[0.850, 0.950]");
  });

  it("keeps three decimals for whole values (a measured 0 is not a count)", () => {
    const zero = group("site=site-z", { site: "site-z" }, 20, 10, [0, 0, 0], [-0.5, -0.5, -0.5]);
    show({ ...run, evaluation: { ...run.evaluation, subgroups: [zero] } });
    const text = screen.getByTestId("subgroup-site=site-z").textContent ?? "";
    expect(text).toContain("0.000[0.000, 0.000]");
    expect(text).toContain("−0.500[−0.500, −0.500]");
  });

  it("explains the absence of subgroups", () => {
    show({ ...run, evaluation: { championId: "r0" } });
    expect(screen.getByText(/carry no attributes/)).toBeTruthy();
  });

  it("orients clearly worse by the metric's direction and formats prevalence", () => {
    expect(clearlyWorse("balancedAccuracy", { value: -0.1, low: -0.2, high: -0.01 })).toBe(true);
    expect(clearlyWorse("balancedAccuracy", { value: -0.1, low: -0.2, high: 0.01 })).toBe(false);
    expect(clearlyWorse("logLoss", { value: 0.1, low: 0.02, high: 0.2 })).toBe(true);
    expect(formatPrevalence({ a: 0.3, b: 0.2, c: 0.5 })).toBe("a 30 % · b 20 % · c 50 %");
  });
});
