import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import type { Model, Permissions } from "../api";
import { Providers } from "../components/Providers";
import { describePrediction } from "../labeling/examplesApi";
import { createQueryClient } from "../queryClient";
import { ExamplesTab } from "./ExamplesTab";

const LABELS = [
  { id: "l0", name: "no tumor", index: 0 },
  { id: "l1", name: "tumor", index: 1 },
];
const DATASET = { id: "d1", name: "brain", problemDefinition: { problemType: "imgClf", labelDefinition: { labels: LABELS } } };
const PERMISSIONS: Permissions = { user: "editor", mayRead: true, mayEdit: true, mayStartRun: true, mayDecide: false };

function model(championId: string | null): Model {
  return { id: "m1", name: "brain-clf", description: "", datasetId: "d1", championId, dagId: "patient_ml__brain_clf", slug: "brain_clf", trainingApproach: {}, deployApproach: {} } as unknown as Model; // what the tab reads
}

function tile(id: string, prediction?: object) {
  return {
    id,
    updatedAt: 0,
    exampleType: "imgClf",
    image: { fileId: `DocumentReference/${id}` },
    status: "unlabeled",
    documentReference: `DocumentReference/${id}`,
    patient: "Patient/p1",
    patientKey: "k1",
    split: "train",
    labelVersion: "none",
    ...(prediction ? { prediction } : {}),
  };
}

/** The API as the tab calls it: the dataset, then pages of examples (answered by `page`). */
function serve(page: (query: URLSearchParams) => object[], counts = { total: 2, unlabeled: 2, draft: 0, confirmed: 0 }) {
  const fetch = vi.fn(async (url: string) => {
    const { pathname, searchParams } = new URL(url, "http://airflow");
    const body = pathname.endsWith("/examples")
      ? { examples: page(searchParams), counts }
      : { dataset: DATASET };
    return new Response(JSON.stringify(body), { status: 200 });
  });
  vi.stubGlobal("fetch", fetch);
  return () => fetch.mock.calls.map(([url]) => new URL(url, "http://airflow")).filter((u) => u.pathname.endsWith("/examples"));
}

function show(m: Model) {
  render(
    <Providers client={createQueryClient({ retry: false })}>
      <ExamplesTab model={m} permissions={PERMISSIONS} />
    </Providers>,
  );
}

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

describe("Examples tab: has prediction", () => {
  it("filters on the server by the champion's kept predictions and shows them on the tiles", async () => {
    const listed = serve((q) =>
      q.get("hasPrediction") === "true"
        ? [tile("a", { runId: "r1", labelIndex: 1, labelName: "tumor", confidence: 0.93 })]
        : [tile("a", { runId: "r1", labelIndex: 1, labelName: "tumor", confidence: 0.93 }), tile("b")],
    );
    show(model("r1"));
    expect(await screen.findByText("◇ tumor 93%")).toBeTruthy();
    expect(screen.getAllByTestId("example-tile")).toHaveLength(2);
    expect(listed()[0].searchParams.get("modelId")).toBe("m1"); // predictions shown from the start
    expect(listed()[0].searchParams.has("hasPrediction")).toBe(false);

    fireEvent.change(screen.getByLabelText("Prediction"), { target: { value: "true" } });
    await waitFor(() => expect(screen.getAllByTestId("example-tile")).toHaveLength(1));
    const last = listed().at(-1)!.searchParams;
    expect([last.get("hasPrediction"), last.get("modelId"), last.get("status")]).toEqual(["true", "m1", "unlabeled"]);
    expect(last.has("marker")).toBe(false); // a new filter starts at the first page

    fireEvent.change(screen.getByLabelText("Prediction"), { target: { value: "false" } });
    await waitFor(() => expect(listed().at(-1)!.searchParams.get("hasPrediction")).toBe("false"));
  });

  it("has no prediction filter while the model has no champion", async () => {
    const listed = serve(() => [tile("a")]);
    show(model(null));
    expect(await screen.findByText("a")).toBeTruthy();
    expect(screen.queryByLabelText("Prediction")).toBeNull();
    expect(screen.queryByTestId("predict-page")).toBeNull();
    expect(listed()[0].searchParams.has("modelId")).toBe(false);
  });
});

describe("Examples tab: first sight", () => {
  it("moves on from an empty Unlabeled to what there is, and says so", async () => {
    const confirmed = { ...tile("c"), status: "confirmed", labelName: "tumor" };
    const listed = serve((q) => (q.get("status") === "unlabeled" ? [] : [confirmed]), { total: 1, unlabeled: 0, draft: 0, confirmed: 1 });
    show(model(null));
    expect(await screen.findByTestId("examples-moved-on")).toBeTruthy();
    expect(screen.getByTestId("examples-moved-on").textContent).toContain("Nothing is left to label");
    await waitFor(() => expect(screen.getAllByTestId("example-tile")).toHaveLength(1));
    expect(screen.queryByText(/No example matches/)).toBeNull();
    expect(listed().at(-1)!.searchParams.has("status")).toBe(false);
    expect(screen.getByTestId("status-all").getAttribute("aria-selected")).toBe("true");
  });

  it("says what to do when a chosen filter matches nothing", async () => {
    serve((q) => (q.get("status") === "draft" ? [] : [tile("a")]));
    show(model(null));
    expect(await screen.findByText("a")).toBeTruthy();
    fireEvent.click(screen.getByTestId("status-draft"));
    expect(await screen.findByText(/pick another status above/)).toBeTruthy();
    expect(screen.queryByTestId("examples-moved-on")).toBeNull();
  });
});

describe("describePrediction", () => {
  it("names the predicted label and confidence, or the labels a predicted mask shows", () => {
    expect(describePrediction({ runId: "r", labelIndex: 0, confidence: 0.5 }, LABELS)).toBe("no tumor 50%");
    expect(describePrediction({ runId: "r", fractions: { "0": 0.9, "1": 0.1 } }, LABELS)).toBe("mask: tumor");
    expect(describePrediction({ runId: "r", fractions: { "0": 1 } }, LABELS)).toBe("mask: background only");
  });
});
