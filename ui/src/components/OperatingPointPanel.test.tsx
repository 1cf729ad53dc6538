import { ChakraProvider } from "@chakra-ui/react";
import { cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";

import type { Run } from "../api";
import { system } from "../theme";
import { OperatingPointPanel } from "./OperatingPointPanel";

const run = {
  id: "r1",
  slug: "calm-otter-1",
  modelId: "m1",
  status: "succeeded",
  approvals: [],
  metrics: {
    challenger: [
      { name: "sensitivity:tumor", value: 0.859, stage: "evaluation", low: 0.8, high: 0.9, direction: "maximize" },
      { name: "specificity:tumor", value: 0.95, stage: "evaluation", low: 0.92, high: 0.97, direction: "maximize" },
    ],
    champion: [{ name: "sensitivity:tumor", value: 0.912, stage: "evaluation", low: 0.87, high: 0.95, direction: "maximize" }],
  },
  evaluation: {
    deltas: { "sensitivity:tumor": { challenger: 0.859, champion: 0.912, delta: -0.053, improved: false, low: -0.09, high: -0.02 } },
    operatingPoints: {
      challenger: {
        rule: "youden", positiveLabel: { index: 1, name: "tumor" }, threshold: 0.41, default: true,
        chosenOn: { split: "validation", images: 60, positives: 30, negatives: 30, sensitivity: 0.9, specificity: 0.93 },
      },
      champion: { rule: "argmax", note: "no operating point is stored with the champion" },
    },
  },
} as unknown as Run; // the fields these tests read

afterEach(cleanup);

describe("OperatingPointPanel", () => {
  it("shows both decisions and the measures at them with intervals and explanations", () => {
    render(
      <ChakraProvider value={system}>
        <OperatingPointPanel run={run} />
      </ChakraProvider>,
    );
    expect(screen.getByTestId("operating-point-challenger").textContent).toContain(
      "tumor when its confidence is at least 0.410",
    );
    expect(screen.getByTestId("operating-point-challenger").textContent).toContain("(the default rule)");
    expect(screen.getByTestId("operating-point-champion").textContent).toContain("The most confident label");
    const row = screen.getByTestId("at-point-sensitivity:tumor");
    expect(row.textContent).toContain("Of the images that are tumor, the share the model calls tumor.");
    expect(row.textContent).toContain("0.859[0.800, 0.900]");
    expect(row.textContent).toContain("−0.053[−0.090, −0.020] worse");
    expect(screen.getByTestId("at-point-specificity:tumor").textContent).toContain("0.950");
  });
});
