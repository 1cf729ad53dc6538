// Pure helpers of the pages (unit-tested in format.test.ts).

import type { Metric, NextRun, Run } from "./api";

export function formatTime(ms?: number | null): string {
  if (ms === undefined || ms === null) return "—";
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** The Models table's "Next run" cell: the due time, or why there is none (never blank). */
export function describeNextRun(next: NextRun | undefined): { text: string; detail: string; muted: boolean } {
  const schedule = next?.schedule ? `Schedule: ${next.schedule}.` : "";
  switch (next?.state) {
    case "scheduled":
      return { text: formatTime(next.at), detail: schedule, muted: false };
    case "manual":
      return { text: "manual", detail: "No schedule: runs start from this page, the CLI or the API.", muted: true };
    case "onAssets":
      return { text: "on drift", detail: "Runs only when monitoring signals drift.", muted: true };
    case "paused":
      return { text: "paused", detail: `The DAG is paused in Airflow: nothing runs until it is unpaused. ${schedule}`.trim(), muted: true };
    case "ended":
      return { text: "none", detail: `The schedule has no further run. ${schedule}`.trim(), muted: true };
    default:
      return { text: "not in Airflow", detail: "Airflow has not parsed this model's DAG (yet), or no longer has it.", muted: true };
  }
}

export function formatDuration(start?: number, end?: number): string {
  if (!start || !end) return "—";
  const seconds = Math.max(0, Math.round((end - start) / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function formatNumber(value?: number | null, digits = 3): string {
  if (value === undefined || value === null || Number.isNaN(value)) return "—";
  if (Number.isInteger(value)) return String(value);
  return value.toFixed(digits);
}

export const PROBLEM_TYPES: Record<string, string> = {
  imgClf: "Image classification",
  imgSeg: "Image segmentation",
};

export interface MetricComparison {
  name: string;
  challenger?: number;
  champion?: number;
  delta?: number;
  direction?: string;
  /** true: the challenger is better on this metric; false: worse; undefined: equal or unknown */
  better?: boolean;
  description?: string;
}

/** Challenger vs champion, evaluated on the same test set, one row per metric. */
export function compareMetrics(run: Pick<Run, "metrics">): MetricComparison[] {
  const rows = new Map<string, MetricComparison>();
  const evaluation = (m: Metric) => (m.stage ?? "evaluation") === "evaluation";
  for (const m of run.metrics.challenger.filter(evaluation)) {
    rows.set(m.name, { name: m.name, challenger: m.value, direction: m.direction, description: m.description });
  }
  for (const m of run.metrics.champion.filter(evaluation)) {
    const row = rows.get(m.name) ?? { name: m.name, direction: m.direction, description: m.description };
    row.champion = m.value;
    rows.set(m.name, row);
  }
  for (const row of rows.values()) {
    if (row.challenger !== undefined && row.champion !== undefined) {
      row.delta = row.challenger - row.champion;
      if (row.delta !== 0 && row.direction) {
        row.better = row.direction === "maximize" ? row.delta > 0 : row.delta < 0;
      }
    }
  }
  return [...rows.values()];
}

export function formatDelta(delta?: number): string {
  if (delta === undefined) return "—";
  const text = Math.abs(delta) < 1e-9 ? "±0" : (delta > 0 ? "+" : "−") + Math.abs(delta).toFixed(3);
  return text;
}

export type View =
  | { kind: "models" }
  | { kind: "model"; modelId?: string; dagId?: string; tab?: string }
  | { kind: "run"; modelId?: string; runId?: string; dagId?: string; dagRunId?: string; tab?: string };

/** The page to show, from the iframe's query string (Airflow fills in {DAG_ID}, {RUN_ID}). */
export function parseView(search: string): View {
  const q = new URLSearchParams(search);
  const get = (k: string) => q.get(k) ?? undefined;
  const tab = get("tab");
  switch (q.get("view")) {
    case "model":
      return { kind: "model", modelId: get("modelId"), dagId: get("dagId"), tab };
    case "run":
      return {
        kind: "run",
        modelId: get("modelId"),
        runId: get("runId"),
        dagId: get("dagId"),
        dagRunId: get("dagRunId"),
        tab,
      };
    default:
      return { kind: "models" };
  }
}

export function viewSearch(view: View): string {
  const q = new URLSearchParams({ view: view.kind });
  for (const [k, v] of Object.entries(view)) {
    if (k !== "kind" && v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  return `?${q.toString()}`;
}

export interface ApprovalState {
  /** Why no decision can be sent, or null when one can. */
  blocker: string | null;
}

/** What the run page's approval form allows, mirroring the API's rules (the API decides). */
export function approvalState(
  run: Pick<Run, "id" | "status" | "approvals" | "approvalStatus">,
  championId: string | null | undefined,
  mayDecide: boolean,
  decideReason?: string | null,
): ApprovalState {
  const blocked = (blocker: string) => ({ blocker });
  if (!mayDecide) return blocked(decideReason ?? "You may not decide on runs of this model.");
  if (run.status === "running") return blocked("The run is still running; it can be decided once evaluated.");
  if (run.status === "failed") return blocked("The run failed; only an evaluated run can be decided.");
  const last = run.approvals[run.approvals.length - 1];
  if (last) {
    // An earlier champion is restored with "Roll back" (deploy actions), not a second decision.
    const who = last.user ?? last.actor;
    const earlier = last.decision === "approved" && championId !== run.id ? " Restoring an earlier champion is a rollback (below)." : "";
    return blocked(`Already ${last.decision} by ${who} on ${formatTime(last.timestamp)}.${earlier}`);
  }
  if (run.approvalStatus === "timedOut") return blocked("The approval window has timed out; start a new run.");
  return { blocker: null };
}

export function statusPalette(status?: string): string {
  switch (status) {
    case "succeeded":
    case "approved":
    case "healthy":
      return "green";
    case "failed":
    case "rejected":
    case "timedOut":
      return "red";
    case "running":
    case "pending":
    case "deploying":
      return "blue";
    case "pruned":
      return "orange";
    default:
      return "gray";
  }
}

/** A hyperparameter for reading: fractions to 4 significant digits (0.0860 for
 * 0.08600813697916544), everything else as it is. Numbers sent as text are read as numbers. */
export function formatParam(value: unknown): string {
  if (value === undefined || value === null) return "—";
  const n = typeof value === "number" ? value : typeof value === "string" && /^-?[\d.]+(e-?\d+)?$/i.test(value) ? Number(value) : NaN;
  if (Number.isNaN(n) || Number.isInteger(n)) return String(value);
  return String(Number(n.toPrecision(4)));
}
