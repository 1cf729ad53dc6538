import { ChakraProvider } from "@chakra-ui/react";
import { cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";

import type { Gate } from "../api";
import { system } from "../theme";
import { GatePanel } from "./GatePanel";

const failing: Gate = {
  evaluated: true,
  championId: "r0",
  passed: false,
  rules: [
    {
      metric: "sensitivity:tumor", title: "Sensitivity of tumor", margin: 0.02, scope: "overall", stratum: "overall",
      passed: false, difference: -0.05, low: -0.081, high: -0.02, worstPlausible: -0.081,
      detail: "Sensitivity of tumor: challenger - champion -0.050 [-0.081, -0.020]; worst plausible -0.081 is not above -0.02",
    },
    {
      metric: "auroc", title: "AUROC", margin: 0.05, scope: "overall", stratum: "overall", passed: true,
      difference: 0.004, low: -0.01, high: 0.02, detail: "AUROC: ...",
    },
  ],
  objective: {
    metric: "balancedAccuracy", title: "Balanced accuracy", challenger: 0.903, champion: 0.911, difference: -0.008,
    low: -0.03, high: 0.01, worse: true, detail: "Balanced accuracy: challenger 0.903 vs champion 0.911 (...); worse",
  },
  overrideRequired: true,
  overrideReasons: ["fails non-inferiority: Sensitivity of tumor ...", "is worse on the objective: ..."],
  duplicateOfRejected: [
    { runId: "r7", slug: "calm-otter-7", modelId: "m1", rejectedBy: "dr-b", rejectedAt: 0, description: "site B artefacts" },
  ],
  approvals: { required: 2, approvedBy: ["dr-a"], remaining: 1 },
};

afterEach(cleanup);

function show(gate?: Gate) {
  render(
    <ChakraProvider value={system}>
      <GatePanel gate={gate} />
    </ChakraProvider>,
  );
}

describe("GatePanel", () => {
  it("shows each rule with its paired interval and verdict, the override and the repeat", () => {
    show(failing);
    const rule = screen.getByTestId("gate-rule-sensitivity:tumor");
    expect(rule.textContent).toContain("Sensitivity — tumor may be worse by less than 0.02");
    expect(rule.textContent).toContain("−0.050[−0.081, −0.020]");
    expect(rule.textContent).toContain("fails");
    expect(screen.getByTestId("gate-rule-auroc").textContent).toContain("holds");
    expect(screen.getByTestId("override-required").textContent).toContain("needs an explicit override");
    expect(screen.getByTestId("duplicate-of-rejected").textContent).toContain("rejected by dr-b");
    expect(screen.getByTestId("approvals-progress").textContent).toContain("Approved so far by dr-a (1 more needed)");
  });

  it("says when there is nothing to check yet", () => {
    show({ ...failing, championId: null, rules: [], objective: null, overrideRequired: false, duplicateOfRejected: [],
           approvals: { required: 1, approvedBy: [], remaining: 1 } });
    expect(screen.getByTestId("gate").textContent).toContain("first run");
    expect(screen.queryByTestId("override-required")).toBeNull();
    cleanup();
    show(undefined);
    expect(screen.getByText(/checked once the run is evaluated/)).toBeTruthy();
  });
});
