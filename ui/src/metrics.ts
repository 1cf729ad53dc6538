// Metrics across runs for the Metrics tab: one chart per metric, series selectable
// (challenger, champion, and per label "challenger/<label>", "champion/<label>").

import type { Run } from "./api";

export interface MetricSeries {
  /** Metric names to choose from ("accuracy", "recall", "training loss", ...). */
  metrics: string[];
  /** The series a metric has across the runs. */
  seriesOf: (metric: string) => string[];
  /** One point per run (oldest first): {x: run slug, <series>: value}. */
  points: (metric: string) => Record<string, string | number>[];
}

export function metricSeries(runsNewestFirst: Run[]): MetricSeries {
  const runs = [...runsNewestFirst].reverse();
  const table = new Map<string, Map<string, Map<string, number>>>(); // metric → run → series → value
  const series = new Map<string, Set<string>>();
  for (const run of runs) {
    for (const subject of ["challenger", "champion"] as const) {
      for (const m of run.metrics[subject] ?? []) {
        const [family, label] = m.name.includes(":") ? m.name.split(/:(.*)/s, 2) : [m.name, undefined];
        const metric = m.stage === "training" ? `training ${family}` : family;
        const name = label ? `${subject}/${label}` : subject;
        if (!table.has(metric)) table.set(metric, new Map());
        const byRun = table.get(metric)!;
        if (!byRun.has(run.id)) byRun.set(run.id, new Map());
        byRun.get(run.id)!.set(name, m.value);
        if (!series.has(metric)) series.set(metric, new Set());
        series.get(metric)!.add(name);
      }
    }
  }
  const order = (a: string, b: string) => a.localeCompare(b);
  return {
    metrics: [...table.keys()].sort((a, b) => Number(a.startsWith("training")) - Number(b.startsWith("training")) || order(a, b)),
    seriesOf: (metric) => [...(series.get(metric) ?? [])].sort(order),
    points: (metric) =>
      runs
        .filter((r) => table.get(metric)?.has(r.id))
        .map((r) => ({ x: r.slug, ...Object.fromEntries(table.get(metric)!.get(r.id)!) })),
  };
}

/** The series shown before the user picks: the whole-model ones, else every challenger label. */
export function defaultSeries(available: string[]): string[] {
  const whole = available.filter((s) => !s.includes("/"));
  return whole.length > 0 ? whole : available.filter((s) => s.startsWith("challenger/"));
}

/** The model's tuning objective (`{metric: "validation:balancedAccuracy", direction}`), if any. */
export function objectiveOf(trainingApproach: unknown): { metric: string; direction?: string } | undefined {
  const objective = (trainingApproach as { objective?: { metric?: unknown; direction?: unknown } } | undefined)?.objective;
  if (typeof objective?.metric !== "string" || !objective.metric) return undefined;
  return { metric: objective.metric, direction: typeof objective.direction === "string" ? objective.direction : undefined };
}

/** The metric the Metrics tab opens on: the objective as the test set measures it
 * ("validation:balancedAccuracy" → "balancedAccuracy"), else the objective's training series,
 * else the first metric. */
export function defaultMetric(metrics: string[], trainingApproach: unknown): string | undefined {
  const objective = objectiveOf(trainingApproach)?.metric;
  if (objective) {
    const bare = objective.slice(objective.lastIndexOf(":") + 1);
    const family = objective.includes(":") ? objective.slice(0, objective.indexOf(":")) : objective;
    for (const candidate of [objective, bare, `training ${objective}`, `training ${family}`]) {
      if (metrics.includes(candidate)) return candidate;
    }
  }
  return metrics[0];
}
