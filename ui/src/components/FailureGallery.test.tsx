import { ChakraProvider } from "@chakra-ui/react";
import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";

import type { Run } from "../api";
import { describeCost, faithfulnessVerdict, type FailureCase, type Faithfulness } from "../failureCases";
import { system } from "../theme";
import { FailureGallery } from "./FailureGallery";

const faith = (deletionAuc: number, randomDeletionAuc: number): Faithfulness => ({
  deletionAuc,
  randomDeletionAuc,
  difference: randomDeletionAuc - deletionAuc,
  ratio: deletionAuc / randomDeletionAuc,
  randomOrders: 3,
  steps: 16,
});

const tumor = { index: 1, name: "tumor" };
const none = { index: 0, name: "no_tumor" };
const cases: FailureCase[] = [
  {
    case: 0,
    exampleId: "doc-12",
    kind: "falsePositive",
    trueLabel: none,
    predictedLabel: tumor,
    confidence: 0.973,
    trueLabelConfidence: 0.027,
    pictures: ["image", "occlusion", "grad-cam"],
    maps: {
      occlusion: { method: "occlusion", faithfulness: faith(0.21, 0.55) },
      "grad-cam": { method: "grad-cam", faithfulness: faith(0.6, 0.55) },
    },
  },
  {
    case: 1,
    exampleId: "doc-40",
    kind: "falseNegative",
    trueLabel: tumor,
    predictedLabel: none,
    confidence: 0.88,
    trueLabelConfidence: 0.12,
    pictures: ["image", "occlusion"],
    maps: { occlusion: { method: "occlusion", faithfulness: faith(0.5, 0.55) } },
  },
];

const run = {
  id: "r1",
  slug: "calm-otter-1",
  modelId: "m1",
  status: "succeeded",
  approvals: [],
  metrics: { challenger: [], champion: [] },
  evaluation: {
    failureCases: {
      perClass: 4,
      decidedBy: "youden on tumor: threshold 0.412",
      classes: [
        { trueLabel: none, errors: 3, images: 50, shown: 1 },
        { trueLabel: tumor, errors: 1, images: 40, shown: 1 },
      ],
      cases,
      methods: ["occlusion", "grad-cam"],
      containerMap: true,
      saliency: { grid: 8, steps: 16, randomOrders: 3, fill: "the image's mean" },
      cost: { images: 290, requests: 6, seconds: 4.2, inferenceSeconds: 3.9, evaluationSeconds: 12.5 },
    },
  },
} as unknown as Run; // the fields these tests read

afterEach(cleanup);

describe("FailureGallery", () => {
  it("groups the errors per true label, toggles the overlays and says how far to trust each map", () => {
    render(
      <ChakraProvider value={system}>
        <FailureGallery run={run} />
      </ChakraProvider>,
    );
    expect(screen.getByTestId("failure-group-0").textContent).toContain("False positives: no_tumor called positive");
    expect(screen.getByTestId("failure-group-0").textContent).toContain("3 of 50 wrong, 1 shown");
    expect(screen.getByTestId("failure-group-1").textContent).toContain("False negatives: tumor called something else");
    expect(screen.getByTestId("failure-case-0").textContent).toContain("True no_tumor, called tumor with confidence 0.97");
    const picture = () => screen.getByTestId("failure-picture-0") as HTMLImageElement;
    expect(picture().src).toContain("/models/m1/runs/r1/failure-cases/0/image.png");
    fireEvent.click(screen.getByTestId("overlay-grad-cam"));
    expect(picture().src).toContain("/failure-cases/0/grad-cam.png");
    // case 1 has no Grad-CAM: it keeps showing its image
    expect((screen.getByTestId("failure-picture-1") as HTMLImageElement).src).toContain("/1/image.png");
    fireEvent.click(screen.getByTestId("overlay-occlusion"));
    expect(picture().src).toContain("/failure-cases/0/occlusion.png");
    expect((screen.getByTestId("failure-picture-1") as HTMLImageElement).src).toContain("/1/occlusion.png");
    expect(screen.getByTestId("faithfulness-0-occlusion").textContent).toBe(
      "Occlusion (platform): faithful: deletion AUC 0.21 vs 0.55 random",
    );
    expect(screen.getByTestId("faithfulness-0-grad-cam").textContent).toContain("no better than random, do not trust");
    expect(screen.getByTestId("faithfulness-1-occlusion").textContent).toContain("barely better than random");
    expect(screen.getByTestId("failure-cost").textContent).toBe(
      "Maps: 4.2 s for 290 model calls in 6 requests; the evaluation itself: 12.5 s.",
    );
  });

  it("says why a run has no gallery", () => {
    const plain = { ...run, evaluation: { testExamples: 3 } };
    render(
      <ChakraProvider value={system}>
        <FailureGallery run={plain} />
      </ChakraProvider>,
    );
    expect(screen.getByText(/No failure cases for this run/)).toBeTruthy();
  });
});

describe("failure case helpers", () => {
  it("grades faithfulness by the ratio to random and words the cost", () => {
    expect(faithfulnessVerdict(faith(0.2, 0.5)).tone).toBe("good");
    expect(faithfulnessVerdict(faith(0.45, 0.5)).tone).toBe("weak");
    expect(faithfulnessVerdict(faith(0.5, 0.5)).tone).toBe("bad");
    expect(faithfulnessVerdict({ ...faith(0.5, 0), ratio: null }).tone).toBe("bad");
    expect(describeCost({ images: 10, requests: 1, seconds: 0.5, inferenceSeconds: 0.4 })).toBe(
      "Maps: 0.5 s for 10 model calls in 1 requests.",
    );
  });
});
