// The model page's tabs as issue 31 found them at 1280×900: tables that wrapped names and
// dates, a deployments "By" column without the approver, a metrics chart on accuracy without
// axis titles, a curation report that was a wall of ids, a monitoring tab that hid a paused DAG.

import { cleanup, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";

import type { Run } from "../api";
import { describeActor } from "../format";
import { defaultMetric } from "../metrics";
import { Providers } from "../components/Providers";
import { createQueryClient } from "../queryClient";
import { ModelPage } from "./ModelPage";

const MODEL = {
  id: "m1",
  name: "brain-clf",
  description: "",
  datasetId: "d1",
  championId: "r1",
  dagId: "patient_ml__brain_clf",
  slug: "brain_clf",
  trainingApproach: { objective: { metric: "validation:balancedAccuracy", direction: "maximize" } },
  deployApproach: { type: "cloud" },
};
const PERMISSIONS = { user: "admin", mayRead: true, mayEdit: true, mayStartRun: true, mayDecide: true };

function run(id: string, slug: string, triggeredBy: string): Run {
  return {
    id,
    slug,
    modelId: "m1",
    status: "succeeded",
    start: 1_765_000_000_000,
    end: 1_765_000_600_000,
    triggeredBy,
    metrics: {
      challenger: [
        { name: "accuracy", value: 0.8925, stage: "evaluation" },
        { name: "balancedAccuracy", value: 0.8412, stage: "evaluation" },
      ],
      champion: [],
    },
    approvals: [],
  } as unknown as Run;
}

const RUNS = [run("r2", "calm-otter-2", "airflow-user:admin"), run("r1", "brave-fox-1", "dr-approver")];

function groups(count: number, listed: number) {
  return {
    count,
    items: Array.from({ length: listed }, (_, i) => ({ examples: [`ex-${i}-a`, `ex-${i}-b`], patients: 2, similarity: 0.97 })),
  };
}

const REPORT = {
  snapshotId: "s".repeat(64),
  createdAt: 1_765_000_000_000,
  exampleCount: 3064,
  report: {
    examples: {},
    identicalImages: { groups: 1, groupsSpanningPatients: 0 },
    nearDuplicates: {
      enabled: true,
      transforms: ["flips", "rotations"],
      minCorrelation: 0.95,
      groups: 341,
      imagesInGroups: 2836,
      groupsSpanningPatients: groups(294, 50),
      groupsWithDifferentLabels: groups(1, 1),
      crossSplit: { count: 0, testWithCopyInTrain: 0, items: [], itemsOmitted: 0 },
    },
  },
};

const BATCHES = [
  {
    id: "b2", modelId: "m1", runId: "r1xxxxxxxxxx", dagRunId: "manual__2026-12-07", chunkSize: 200, total: 450, chunks: 3,
    chunksDone: 1, scored: 200, written: 200, skipped: 0, status: "running", actor: "airflow:schedule",
    selection: { split: "test", writeBack: true }, writtenTo: "FHIR server http://fhir/fhir", createdAt: 1_765_000_000_000,
  },
  {
    id: "b1", modelId: "m1", runId: "r1xxxxxxxxxx", dagRunId: "manual__2026-12-06", chunkSize: 200, total: 3000, chunks: 15,
    chunksDone: 15, scored: 2998, written: 2998, skipped: 2, status: "succeeded", actor: "airflow:schedule",
    selection: { split: "all", since: "2026-12-01T00:00:00Z", writeBack: true }, writtenTo: "FHIR server http://fhir/fhir",
    createdAt: 1_764_900_000_000, finishedAt: 1_764_900_600_000,
  },
];

function serve(monitorDag: object = { dagId: "patient_ml_monitor__brain_clf", state: "paused", schedule: "@hourly" }, events: object[] = []) {
  const answers: [RegExp, object][] = [
    [/\/models\/m1\/runs$/, { runs: RUNS, totalEntries: 2 }],
    [/\/models\/m1\/permissions$/, { permissions: PERMISSIONS }],
    [
      /\/models\/m1\/deployments$/,
      {
        deployments: [
          {
            id: 2,
            runId: "r1",
            runSlug: "brave-fox-1",
            action: "promote",
            deployType: "cloud",
            actor: "airflow:patient_ml__brain_clf.deploy",
            approvedBy: ["dr-approver"],
            timestamp: 1_765_000_000_000,
            isCurrent: true,
          },
        ],
      },
    ],
    [/\/datasets\/d1\/curation-report$/, { curationReport: REPORT }],
    [/\/models\/m1\/monitoring$/, { modelId: "m1", championId: "r1", monitoring: { schedule: "@hourly" }, monitorDag, reference: null, events }],
    [/\/models\/m1\/scoring-batches$/, { modelId: "m1", scoringDagId: "patient_ml_score__brain_clf", batches: BATCHES }],
    [/\/models\/m1$/, { model: MODEL }],
  ];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string) => {
      const { pathname } = new URL(url, "http://airflow");
      const found = answers.find(([pattern]) => pattern.test(pathname));
      return new Response(JSON.stringify(found ? found[1] : {}), { status: found ? 200 : 404 });
    }),
  );
}

function show(tab: string) {
  return render(
    <Providers client={createQueryClient({ retry: false })}>
      <ModelPage view={{ kind: "model", modelId: "m1", tab }} go={() => {}} />
    </Providers>,
  );
}

beforeAll(() => {
  const size = { width: 900, height: 340 };
  globalThis.ResizeObserver = class {
    constructor(private readonly report: ResizeObserverCallback) {}
    observe(target: Element) {
      this.report([{ target, contentRect: size } as unknown as ResizeObserverEntry], this as unknown as ResizeObserver);
    }
    unobserve() {}
    disconnect() {}
  } as unknown as typeof ResizeObserver;
  const measure = HTMLElement.prototype.getBoundingClientRect;
  HTMLElement.prototype.getBoundingClientRect = function (this: HTMLElement) {
    if (!this.classList.contains("recharts-responsive-container")) return measure.call(this);
    return { ...size, top: 0, left: 0, right: size.width, bottom: size.height, x: 0, y: 0 } as DOMRect;
  };
});

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

describe("who did it", () => {
  it("names people the same way whatever the channel, and Airflow's own actors in words", () => {
    expect(describeActor("airflow-user:admin").name).toBe("admin");
    expect(describeActor("dr-approver").name).toBe("dr-approver");
    expect(describeActor("airflow:patient_ml__brain_clf.deploy").name).toBe("pipeline (deploy task)");
    expect(describeActor("airflow:schedule").name).toBe("Airflow schedule");
  });
});

describe("the model's tabs", () => {
  it("keep each name on one line (at 1280 px two of them wrapped onto two lines)", async () => {
    serve();
    show("runs");
    const tabs = within(await screen.findByTestId("model-tabs")).getAllByRole("tab");
    expect(tabs.map((t) => t.textContent)).toContain("Curation report");
    for (const tab of tabs) expect(getComputedStyle(tab).whiteSpace).toBe("nowrap");
  });
});

describe("Runs and Deployments tables", () => {
  it("keep run names and dates on one line and show people, not actor ids", async () => {
    serve();
    show("runs");
    const table = await screen.findByTestId("runs-table");
    const names = within(table).getAllByTestId("run-name");
    const times = within(table).getAllByTestId("run-times");
    for (const cell of [...names, ...times]) expect(getComputedStyle(cell).whiteSpace).toBe("nowrap");
    expect(within(table).getAllByTestId("triggered-by").map((c) => c.textContent)).toEqual(["admin", "dr-approver"]);
    // challenger vs champion: a metric's name, then its numbers, each on one line
    const pieces = within(table).getAllByTestId("run-comparison").flatMap((c) => [...c.querySelectorAll("p > span")]);
    expect(pieces.length).toBeGreaterThan(0);
    for (const piece of pieces) expect(getComputedStyle(piece).whiteSpace).toBe("nowrap");
  });

  it("say who approved a deployment the pipeline carried out", async () => {
    serve();
    show("deployments");
    const by = await screen.findByTestId("deployed-by");
    expect(by.textContent).toContain("approved by dr-approver");
    expect(by.textContent).toContain("deployed by pipeline (deploy task)");
    expect(by.textContent).not.toContain("airflow:patient_ml__");
    expect(getComputedStyle(by).whiteSpace).toBe("nowrap");
  });
});

describe("Metrics tab", () => {
  it("opens on the model's objective, with axis titles and room for 4-digit ticks", async () => {
    expect(defaultMetric(["accuracy", "balancedAccuracy", "training validation"], MODEL.trainingApproach)).toBe("balancedAccuracy");
    expect(defaultMetric(["accuracy"], MODEL.trainingApproach)).toBe("accuracy");
    serve();
    const { container } = show("metrics");
    const select = (await screen.findByLabelText("Metric")) as HTMLSelectElement;
    expect(select.value).toBe("balancedAccuracy");
    const chart = await screen.findByTestId("metrics-chart");
    await waitFor(() => expect(chart.querySelector(".recharts-yAxis")).toBeTruthy());
    const labels = [...container.querySelectorAll(".recharts-label")].map((l) => l.textContent);
    expect(labels).toContain("Balanced accuracy");
    expect(labels).toContain("run (oldest on the left)");
    // recharts' default 60 px y-axis clipped ".8925": the axis is wider.
    expect(Number(chart.querySelector(".recharts-yAxis line, .recharts-yAxis .recharts-cartesian-axis-line")?.getAttribute("x1"))).toBeGreaterThanOrEqual(72);
  });
});

describe("Curation report", () => {
  it("explains near-duplicates, says whether any group crosses splits, and folds the groups away", async () => {
    serve();
    show("curation");
    const summary = await screen.findByTestId("near-duplicate-summary");
    expect(summary.textContent).toContain("341 groups of near-duplicate images");
    expect(summary.textContent).toContain("2,836 images of 3,064");
    expect(summary.textContent).toContain("same split");
    expect(screen.getByTestId("cross-split").textContent).toContain("no group crosses splits");
    expect(screen.getByText(/identical images: 1 group \(/)).toBeTruthy();
    const different = screen.getByTestId("groups-with-different-labels");
    expect(different.textContent).toContain("1 group");
    expect(different.textContent).not.toContain("1 groups");
    // Folded: no wall of ids until asked; then a page of groups, saying how many of how many.
    const spanning = screen.getByTestId("groups-spanning-patients");
    expect(within(spanning).queryAllByTestId("near-duplicate-group")).toHaveLength(0);
    fireEvent.click(within(spanning).getByText("Show groups"));
    expect(within(spanning).getAllByTestId("near-duplicate-group")).toHaveLength(5);
    expect(within(spanning).getByTestId("groups-shown").textContent).toBe(
      "Showing 1–5 of 50 listed (294 in all; the report lists the first 50)",
    );
    expect(within(spanning).getAllByRole("img").length).toBeGreaterThan(0); // thumbnails
    fireEvent.click(within(spanning).getByText("Next"));
    expect(within(spanning).getByTestId("groups-shown").textContent).toContain("Showing 6–10 of 50");
  });

  it("warns when copies sit in different splits", async () => {
    serve();
    REPORT.report.nearDuplicates.crossSplit = {
      count: 2,
      testWithCopyInTrain: 1,
      items: [{ example: "e1", split: "test", copiesIn: ["train"] } as never, { example: "e2", split: "train", copiesIn: ["validation"] } as never],
      itemsOmitted: 0,
    };
    try {
      show("curation");
      const cross = await screen.findByTestId("cross-split");
      expect(cross.textContent).toContain("2 images with a copy in another split");
      expect(cross.textContent).toContain("1 test image with a copy in training");
    } finally {
      REPORT.report.nearDuplicates.crossSplit = { count: 0, testWithCopyInTrain: 0, items: [], itemsOmitted: 0 };
    }
  });
});

describe("Monitoring tab", () => {
  it("says the monitor DAG is paused and how to unpause it, not 'Checked @hourly'", async () => {
    serve();
    show("monitoring");
    const notice = await screen.findByTestId("monitor-dag-state");
    expect(notice.textContent).toContain("the monitor DAG is paused");
    expect(notice.textContent).toContain("airflow dags unpause patient_ml_monitor__brain_clf");
    expect(screen.getByTestId("monitoring").textContent).not.toContain("Checked @hourly");
  });

  it("shows feature drift and the performance estimated before labels arrive", async () => {
    const event = {
      id: 7,
      status: "breach",
      breaches: ["featureDrift.images"],
      window: { predictions: 50 },
      createdAt: 1_765_000_000_000,
      details: {
        featureDrift: { pValue: 0.002, drifted: true, largestShifts: { grad1: -3.12, noiseMad: 2.04 } },
        estimatedPerformance: {
          metric: "balancedAccuracy",
          balancedAccuracy: { value: 0.87, low: 0.8, high: 0.93 },
          floor: 0.85,
          breached: false,
        },
        livePerformance: { metric: "balancedAccuracy", labelled: 3, skipped: "3 labelled prediction(s), fewer than minLabelled (30)" },
        subgroups: {
          attributes: ["site", "manufacturer"],
          tested: 2,
          levelDivisor: 2,
          groups: [
            { attribute: "site", value: "East.1", predictions: 12, reference: "overall", breaches: ["subgroup.site=East.1.featureDrift.images"] },
            { attribute: "site", value: "North", predictions: 30, reference: "subgroup", breaches: [] },
            { attribute: "manufacturer", value: "GE", predictions: 4, skipped: "4 prediction(s) in the window, fewer than minSamples (10)" },
          ],
        },
      },
    };
    serve(undefined, [event]);
    show("monitoring");
    expect((await screen.findByTestId("feature-drift")).textContent).toBe("drifted (p 0.002): grad1 −3.1 sd, noiseMad +2.0 sd");
    const estimated = screen.getByTestId("estimated-performance").textContent;
    expect(estimated).toContain("≈ 0.870");
    expect(estimated).toContain("floor 0.850");
    expect(screen.getByTestId("live-performance").textContent).toContain("fewer than minLabelled");
    // a drift at one site, named with its own window (a value may hold dots)
    expect(screen.getByTestId("subgroup-windows").textContent).toBe(
      "site=East.1 (12): featureDrift.images · 1 other window clean · 1 too small",
    );
  });

  it("says when the next check is due when Airflow schedules it", async () => {
    serve({ dagId: "patient_ml_monitor__brain_clf", state: "scheduled", schedule: "@hourly", at: 1_765_000_000_000 });
    show("monitoring");
    expect((await screen.findByTestId("monitoring")).textContent).toContain("Checked @hourly (next");
    expect(screen.queryByTestId("monitor-dag-state")).toBeNull();
  });
});

describe("Batch scoring tab", () => {
  it("shows each batch's selection, progress and where its predictions went", async () => {
    serve();
    show("scoring");
    const rows = await screen.findAllByTestId("scoring-row");
    expect(rows).toHaveLength(2);
    const examples = screen.getAllByTestId("scoring-examples").map((c) => c.textContent);
    const progress = screen.getAllByTestId("scoring-progress").map((c) => c.textContent);
    expect(examples[0]).toBe("450 examplestest split");
    expect(progress[0]).toBe("1 of 3 chunks done200 scored, 200 written");
    expect(rows[0].textContent).toContain("running");
    expect(examples[1]).toMatch(/^3,000 examplesall splits, changed since /);
    expect(progress[1]).toBe("15 of 15 chunks done2,998 scored, 2,998 written, 2 skipped");
    for (const cell of screen.getAllByTestId("scoring-progress")) expect(getComputedStyle(cell).whiteSpace).toBe("nowrap");
    expect(rows[1].textContent).toContain("FHIR server http://fhir/fhir");
    expect(screen.getByTestId("scoring").textContent).toContain("airflow dags trigger patient_ml_score__brain_clf");
  });
});
