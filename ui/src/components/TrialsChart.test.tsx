import { ChakraProvider } from "@chakra-ui/react";
import { cleanup, render, waitFor } from "@testing-library/react";
import { afterEach, beforeAll, describe, expect, it } from "vitest";

import type { Trial } from "../api";
import { system } from "../theme";
import { describeTrial, trialSeries } from "../trials";
import { TrialsChart } from "./charts";

// A sweep's story: two complete trials, one pruned at its last reported value, one failed.
const SWEEP: Trial[] = [
  { number: 0, state: "complete", params: {}, value: 0.8 },
  { number: 1, state: "pruned", params: {}, value: 0.55 },
  { number: 2, state: "failed", params: {}, failure: "learning_rate='abc' is not a number" },
  { number: 3, state: "complete", params: {}, value: 0.9 },
  { number: 4, state: "pruned", params: {} }, // recorded before pruned trials kept a value
];

describe("trialSeries", () => {
  it("places complete and pruned trials at their values and failed ones on the axis floor", () => {
    const { points, domain, counts } = trialSeries(SWEEP);
    expect(counts).toEqual({ complete: 2, pruned: 2, failed: 1, running: 0 });
    expect(domain[0]).toBeLessThan(0.55);
    expect(domain[1]).toBeGreaterThan(0.9);
    expect(points.map((p) => [p.complete, p.pruned, p.failed])).toEqual([
      [0.8, undefined, undefined],
      [undefined, 0.55, undefined],
      [undefined, undefined, domain[0]],
      [0.9, undefined, undefined],
      [undefined, domain[0], undefined],
    ]);
    // The best so far counts complete trials only: a pruned value is no result.
    expect(points.map((p) => p.best)).toEqual([0.8, 0.8, 0.8, 0.9, 0.9]);
    expect(trialSeries(SWEEP, true).points.map((p) => p.best)).toEqual([0.8, 0.8, 0.8, 0.8, 0.8]);
  });

  it("has an axis even when every trial failed", () => {
    const { points, domain } = trialSeries([{ number: 0, state: "failed", params: {}, failure: "boom" }]);
    expect(domain[0]).toBeLessThan(domain[1]);
    expect(points[0].failed).toBe(domain[0]);
  });

  it("says what each trial did in its tooltip", () => {
    const [complete, pruned, failed, , early] = trialSeries(SWEEP).points;
    expect(describeTrial(complete)).toBe("objective 0.8000");
    expect(describeTrial(pruned)).toBe("pruned at 0.5500 (its last reported value)");
    expect(describeTrial(failed)).toBe("failed: learning_rate='abc' is not a number");
    expect(describeTrial(early)).toBe("pruned before reporting a value");
  });
});

describe("TrialsChart", () => {
  beforeAll(() => {
    // jsdom lays nothing out: the chart's box measures 640 x 280.
    const size = { width: 640, height: 280 };
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
  afterEach(cleanup);

  it("draws every trial with a marker per state and names them in the legend", async () => {
    const { container, findByText } = render(
      <ChakraProvider value={system}>
        <TrialsChart trials={SWEEP} />
      </ChakraProvider>,
    );
    expect(await findByText("pruned (2): last reported value")).toBeTruthy();
    expect(await findByText("complete (2)")).toBeTruthy();
    expect(await findByText("failed (1): no value")).toBeTruthy();
    expect(await findByText("best so far")).toBeTruthy();
    const chart = container.querySelector("[data-testid=trials-chart]")!;
    expect(chart.getAttribute("aria-label")).toContain("2 complete, 2 pruned, 1 failed");
    // One marker per trial: complete circles, pruned triangles, the failed one a cross on the axis.
    const markers = () => [...chart.querySelectorAll(".recharts-scatter")].map((s) => s.querySelectorAll(".recharts-scatter-symbol").length);
    await waitFor(() => expect(markers()).toEqual([2, 2, 1]));
    const shapes = [...chart.querySelectorAll(".recharts-scatter")].map((s) => s.querySelector(".recharts-symbols")?.getAttribute("d")?.slice(0, 12));
    expect(new Set(shapes).size).toBe(3);
    // Where they sit: higher values higher up (smaller y); the failed trial at the axis floor.
    const ys = [...chart.querySelectorAll(".recharts-scatter")].map((s) =>
      [...s.querySelectorAll(".recharts-symbols")].map((e) => Number(/translate\(([-\d.]+),\s*([-\d.]+)\)/.exec(e.getAttribute("transform") ?? "")?.[2])),
    );
    const [[c08, c09], [p055, pFloor], [fFloor]] = ys;
    expect(c09).toBeLessThan(c08);
    expect(c08).toBeLessThan(p055);
    expect(p055).toBeLessThan(fFloor);
    expect(pFloor).toBeCloseTo(fFloor);
  });

  it("names the objective on its y-axis", async () => {
    const { container } = render(
      <ChakraProvider value={system}>
        <TrialsChart trials={SWEEP} objective="validation:balancedAccuracy" />
      </ChakraProvider>,
    );
    await waitFor(() => expect(container.querySelector(".recharts-yAxis")).toBeTruthy());
    const labels = [...container.querySelectorAll(".recharts-label")].map((l) => l.textContent);
    expect(labels).toContain("validation:balancedAccuracy");
  });
});
