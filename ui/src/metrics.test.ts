import { describe, expect, it } from "vitest";

import type { Run } from "./api";
import { defaultSeries, metricSeries } from "./metrics";

function run(id: string, challenger: Run["metrics"]["challenger"], champion: Run["metrics"]["champion"] = []): Run {
  return { id, slug: `run-${id}`, modelId: "m", status: "succeeded", metrics: { challenger, champion }, approvals: [] } as unknown as Run; // the fields these tests read
}

describe("metricSeries", () => {
  const runs = [
    // newest first, as the API lists them
    run(
      "2",
      [
        { name: "accuracy", value: 0.9, stage: "evaluation" },
        { name: "recall:tumour", value: 0.8, stage: "evaluation" },
        { name: "loss", value: 0.2, stage: "training" },
      ],
      [
        { name: "accuracy", value: 0.85, stage: "evaluation" },
        { name: "recall:tumour", value: 0.7, stage: "evaluation" },
      ],
    ),
    run("1", [{ name: "accuracy", value: 0.85, stage: "evaluation" }]),
  ];
  const series = metricSeries(runs);

  it("lists platform metrics, per-label families and training metrics", () => {
    expect(series.metrics).toEqual(["accuracy", "recall", "training loss"]);
  });

  it("offers challenger, champion and per-label series", () => {
    expect(series.seriesOf("accuracy")).toEqual(["challenger", "champion"]);
    expect(series.seriesOf("recall")).toEqual(["challenger/tumour", "champion/tumour"]);
    expect(defaultSeries(series.seriesOf("recall"))).toEqual(["challenger/tumour"]);
  });

  it("charts oldest run first, one point per run that has the metric", () => {
    expect(series.points("accuracy")).toEqual([
      { x: "run-1", challenger: 0.85 },
      { x: "run-2", challenger: 0.9, champion: 0.85 },
    ]);
    expect(series.points("recall")).toEqual([{ x: "run-2", "challenger/tumour": 0.8, "champion/tumour": 0.7 }]);
  });
});
