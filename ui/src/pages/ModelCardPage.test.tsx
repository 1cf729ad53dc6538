import { cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";

import { parseView, viewSearch } from "../format";
import { formatEstimate, markdownUrl, type ModelCardDocument, shownTime } from "../modelCard";
import { Providers } from "../components/Providers";
import { createQueryClient } from "../queryClient";
import { ModelCardDocumentView } from "./ModelCardPage";

const card: ModelCardDocument = {
  format: "patient-ml-model-card-document/1",
  title: "Model card: brain-mri — run calm-otter-2",
  generatedAt: "2026-12-06T18:52:31Z",
  model: { id: "m1", name: "brain-mri", revision: 3 },
  run: { id: "r2", slug: "calm-otter-2", status: "succeeded", triggeredBy: "scheduler", started: "2026-12-05T08:00:00Z", ended: "2026-12-05T09:30:00Z" },
  problem: { problemType: "imgClf", title: "Image classification", labels: [{ index: 0, name: "no_tumour" }, { index: 1, name: "tumour" }] },
  intendedUse: { summary: "Triage aid for brain MRI slices.", declared: true, intendedUsers: ["radiologists"], outOfScope: ["Diagnosis."] },
  provenance: {
    datasetName: "brain-mri-tumour",
    fhirSource: { kind: "fhirServer", name: "FHIR REST server (Airflow connection 'fhir_default')" },
    inclusionCodes: ["http://loinc.org|24590-2"],
    snapshotId: "ab".repeat(32),
    snapshotCreated: "2026-12-05T07:59:00Z",
    splits: [{ split: "test", images: 240, patients: 120, clusters: 118 }],
  },
  population: {
    prevalence: [{ split: "test", label: "tumour", images: 120, share: 0.5 }],
    subgroupsRecorded: true,
    subgroups: [
      {
        name: "site=B", images: 18, clusters: 9, small: true, prevalence: [{ label: "tumour", share: 0.25 }],
        metrics: [{ name: "balancedAccuracy", title: "Balanced accuracy", direction: "maximize",
          challenger: { value: 0.71 }, champion: { value: 0.8 }, difference: { value: -0.09, low: -0.2, high: 0.02 }, verdict: "worse" }],
      },
    ],
    note: "2 subgroups of the test set, each scored on its own images.",
  },
  performance: {
    evaluated: true, testImages: 240, testClusters: 120, testImagesLeftOut: 0, labelsChanged: false,
    intervals: "95% cluster bootstrap, percentile interval, 2000 resamples",
    championRun: "brisk-lagoon-1 (r1)",
    operatingPoint: { rule: "youden", description: "tumour at confidence >= 0.545 (Youden's J)" },
    metrics: [{ name: "balancedAccuracy", title: "Balanced accuracy", direction: "maximize",
      challenger: { value: 0.854, low: 0.812, high: 0.896 }, champion: { value: 0.917, low: 0.883, high: 0.95 },
      difference: { value: -0.062, low: -0.117, high: -0.008 }, verdict: "shownWorse" }],
  },
  failureGallery: { recorded: false, classes: [], note: "No failure cases recorded: this run's evaluation did not keep them." },
  calibration: { recorded: true, note: "Expected calibration error over 10 bins.", challengerError: { value: 0.155, low: 0.113, high: 0.198 },
    bins: [{ confidence: 0.55, accuracy: 0.82, count: 45 }] },
  limitations: [
    { text: "Trained on one site.", source: "declared" },
    { text: "Worse than the champion on Balanced accuracy: -0.062.", source: "derived" },
  ],
  lineage: { snapshotId: "ab".repeat(32), trainingImage: "patient-ml/img-clf-trainer:0.1.0", inferenceImage: "patient-ml/img-clf-trainer:0.1.0",
    packageVersion: "0.1.0", objective: "maximize validation:balancedAccuracy", hyperparameters: [{ name: "epochs", value: "8" }] },
  approval: {
    status: "approved", minApprovers: 1,
    decisions: [{ decision: "approved", by: "dr-b", actor: "user", at: "2026-12-05T10:00:00Z", justification: "site B needs a model",
      channel: "ui", override: "a second read covers it", overrideReasons: ["is worse on the objective"], rollback: false }],
  },
  deployment: { type: "cloud", status: "not deployed", isChampion: false },
};

afterEach(cleanup);

function show(value: ModelCardDocument) {
  render(
    <Providers client={createQueryClient({ retry: false })}>
      <ModelCardDocumentView card={value} />
    </Providers>,
  );
}

describe("ModelCardDocumentView", () => {
  it("shows every section as a document: dates as dates, intervals, verdicts, decisions", () => {
    show(card);
    for (const id of ["intended-use", "provenance", "population", "performance", "failures", "calibration", "limitations",
      "lineage", "decisions"]) {
      expect(screen.getByTestId(`card-${id}`)).toBeTruthy();
    }
    expect(screen.getByTestId("card-byline").textContent).toContain("started 2026-12-05 08:00 UTC · ended 2026-12-05 09:30 UTC");
    const metrics = screen.getByTestId("card-metrics").textContent ?? "";
    expect(metrics).toContain("0.854 [0.812, 0.896]");
    expect(metrics).toContain("−0.062 [−0.117, −0.008]");
    expect(metrics).toContain("worse ✗");
    expect(screen.getByTestId("card-subgroup-site=B").textContent).toContain("small: read with care");
    expect(screen.getByTestId("card-subgroup-site=B").textContent).toContain("Prevalence: tumour 25.0 %");
    expect(screen.getByTestId("card-failures").textContent).toContain("No failure cases recorded");
    expect(screen.getByTestId("card-override").textContent).toContain("Override: a second read covers it");
    expect(screen.getByTestId("card-decision").textContent).toContain("2026-12-05 10:00 UTC");
    expect(screen.getByTestId("card-lineage").textContent).toContain("Source commit");
    expect(screen.getByTestId("card-lineage").textContent).toContain("not recorded");
    expect(screen.getByTestId("card-limitations").textContent).toContain("(derived from this run)");
    const page = screen.getByTestId("model-card").textContent ?? "";
    expect(page).not.toContain("null");
    expect(page).not.toContain("undefined");
    const download = screen.getByTestId("download-markdown");
    expect(download.getAttribute("href")).toMatch(/\/v1\/patient-ml\/models\/m1\/runs\/r2\/model-card\/markdown$/);
    expect(download.hasAttribute("download")).toBe(true);
    const styles = [...document.querySelectorAll("style")].map((s) => s.textContent ?? "");
    expect(styles.some((s) => s.includes("@media print") && s.includes("[data-print=\"hide\"]"))).toBe(true);
  });

  it("shows the run's provenance in its lineage and a moved image tag", () => {
    const moved = "The training image tag t:1 moved between runs: run calm-otter-7 used sha256:111111111111, this run sha256:222222222222.";
    show({
      ...card,
      lineage: {
        ...card.lineage,
        trainingImageDigest: "sha256:" + "2".repeat(64),
        trainingBackend: "docker",
        inferenceImageDigest: "sha256:" + "4".repeat(64),
        sourceCommit: "0123abc",
        sourceDirty: true,
        trainerPython: "3.11.2",
        trainerLibraries: ["numpy 1.24.2", "torch 1.13.1"],
        trainerReportedBy: "trainer",
        sampler: "Optuna TPESampler, seed 7 (trial n: seed * 100003 + n), MedianPruner",
        bestTrial: 2,
        tagMoves: [moved],
      },
    });
    expect(screen.getByTestId("card-tag-moved").textContent).toBe(`Image tag moved: ${moved}`);
    const text = screen.getByTestId("card-lineage").textContent ?? "";
    expect(text).toContain("sha256:" + "2".repeat(64) + " (docker)");
    expect(text).toContain("Python 3.11.2; numpy 1.24.2, torch 1.13.1 (reported by the trainer)");
    expect(text).toContain("0123abc (with uncommitted changes)");
    expect(text).toContain("seed 7");
    expect(text).toContain("epochs = 8 (trial 2)");
  });

  it("says what is absent: no evaluation, no subgroups, failure cases with their maps", () => {
    show({
      ...card,
      population: { prevalence: [], subgroupsRecorded: false, subgroups: [], note: "No subgroup attributes recorded." },
      performance: { evaluated: false, testImagesLeftOut: 0, labelsChanged: false, metrics: [] },
      failureGallery: {
        recorded: true, note: "Wrongly answered test images.",
        classes: [
          { label: "no_tumour", errors: 2, images: 120, cases: [] },
          { label: "tumour", errors: 30, images: 120, cases: [
            { exampleId: "ex-7", trueLabel: "tumour", predictedLabel: "no_tumour", confidence: 0.91,
              maps: [{ name: "image", url: "/models/m1/runs/r2/failure-cases/0/image.png" },
                { name: "external", url: "https://maps.example.org/ex-7.png" }] },
            { exampleId: "ex-9", trueLabel: "tumour", predictedLabel: "no_tumour", maps: [], mapsError: "the model did not answer" },
          ] },
        ],
      },
      approval: { status: "pending", minApprovers: 2, decisions: [] },
    });
    expect(screen.getByTestId("card-performance").textContent).toContain("Not evaluated yet.");
    expect(screen.getByTestId("card-subgroups-note").textContent).toBe("No subgroup attributes recorded.");
    const failures = screen.getByTestId("card-failures");
    expect(failures.textContent).toContain("tumour → no_tumour (0.91)");
    expect(failures.querySelector("img")?.getAttribute("src")).toMatch(
      /\/v1\/patient-ml\/models\/m1\/runs\/r2\/failure-cases\/0\/image\.png$/,
    );
    expect(failures.textContent).toContain("True label tumour · 30 of 120 test images answered wrongly");
    expect(failures.textContent).toContain("No case of this label kept.");
    expect(failures.textContent).toContain("No maps: the model did not answer");
    expect(failures.querySelector("a[href='https://maps.example.org/ex-7.png']")?.textContent).toBe("external");
    expect(screen.getByTestId("card-decisions").textContent).toContain("No decision yet.");
  });
});

describe("model card helpers", () => {
  it("formats dates, estimates and the route", () => {
    expect(shownTime("2026-12-06T18:52:31Z")).toBe("2026-12-06 18:52 UTC");
    expect(shownTime(undefined)).toBe("not recorded");
    expect(formatEstimate({ value: 0.012, low: -0.01, high: 0.035 }, true)).toBe("+0.012 [−0.010, +0.035]");
    expect(formatEstimate({ value: 0.9 })).toBe("0.900");
    expect(formatEstimate(undefined)).toBe("—");
    expect(markdownUrl("m 1", "r2")).toContain("/models/m%201/runs/r2/model-card/markdown");
    const view = parseView("?view=modelCard&modelId=m1&runId=r2");
    expect(view).toEqual({ kind: "modelCard", modelId: "m1", runId: "r2" });
    expect(viewSearch(view)).toBe("?view=modelCard&modelId=m1&runId=r2");
  });
});
