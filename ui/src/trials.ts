// The points of the trials chart (objective over trials): complete trials at their objective,
// pruned ones at the last value they reported before the pruner stopped them, failed ones (no
// value) on the floor of the axis, and the best complete value so far.

import type { Trial } from "./api";

export interface TrialPoint {
  number: number;
  state: string;
  complete?: number;
  pruned?: number;
  /** Failed trials have no value: drawn at the bottom of the y axis (so are pruned ones that
   * never reported one). */
  failed?: number;
  best?: number;
  value?: number;
  failure?: string;
}

export interface TrialsSeries {
  points: TrialPoint[];
  /** The y axis: every value with a margin; failed trials sit on its lower end. */
  domain: [number, number];
  counts: { complete: number; pruned: number; failed: number; running: number };
}

export function trialSeries(trials: Trial[], minimize = false): TrialsSeries {
  const values = trials.filter((t) => (t.state === "complete" || t.state === "pruned") && Number.isFinite(t.value)).map((t) => t.value!);
  const lo = values.length ? Math.min(...values) : 0;
  const hi = values.length ? Math.max(...values) : 1;
  const margin = hi > lo ? (hi - lo) * 0.08 : Math.max(Math.abs(hi) * 0.05, 0.05);
  const domain: [number, number] = [round(lo - margin), round(hi + margin)];
  const counts = { complete: 0, pruned: 0, failed: 0, running: 0 };
  let best: number | undefined;
  const points = [...trials]
    .sort((a, b) => a.number - b.number)
    .map(({ value, failure, ...t }) => ({ ...t, value: value ?? undefined, failure: failure ?? undefined }))
    .map((t) => {
      const point: TrialPoint = { number: t.number, state: t.state, value: t.value, failure: t.failure };
      const finite = t.value !== undefined && Number.isFinite(t.value);
      if (t.state === "complete" && finite) {
        best = best === undefined ? t.value : minimize ? Math.min(best, t.value!) : Math.max(best, t.value!);
        point.complete = t.value;
      } else if (t.state === "pruned") {
        point.pruned = finite ? t.value : domain[0]; // pruned before any report: on the axis
      } else if (t.state === "failed") {
        point.failed = domain[0]; // no value to show: marked on the axis
      }
      if (t.state in counts) counts[t.state as keyof typeof counts] += 1;
      point.best = best;
      return point;
    });
  return { points, domain, counts };
}

function round(x: number): number {
  return Number(x.toPrecision(6));
}

/** What the tooltip says of a trial. */
export function describeTrial(p: TrialPoint): string {
  const value = p.value !== undefined && Number.isFinite(p.value) ? p.value.toPrecision(4) : undefined;
  if (p.state === "complete" && value) return `objective ${value}`;
  if (p.state === "pruned") return value ? `pruned at ${value} (its last reported value)` : "pruned before reporting a value";
  if (p.state === "failed") return `failed${p.failure ? `: ${p.failure.length > 160 ? `${p.failure.slice(0, 160)}…` : p.failure}` : ""}`;
  return p.state;
}
