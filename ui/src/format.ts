// Pure helpers of the pages (unit-tested in format.test.ts).

import type { NextRun, OperatingPoint, Run } from "./api";

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

export function formatDuration(start?: number | null, end?: number | null): string {
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
  /** true: the challenger is better on this metric; false: worse; undefined: equal, unknown,
   * or (with an interval) not clearly either: the interval of the difference holds 0. */
  better?: boolean;
  description?: string;
  /** 95 % intervals (clusters resampled); the delta's is paired. */
  challengerInterval?: [number, number];
  championInterval?: [number, number];
  deltaInterval?: [number, number];
}

function interval(low?: number | null, high?: number | null): [number, number] | undefined {
  return typeof low === "number" && typeof high === "number" ? [low, high] : undefined;
}

/** Challenger vs champion, evaluated on the same test set, one row per metric. */
export function compareMetrics(run: Pick<Run, "metrics"> & Partial<Pick<Run, "evaluation">>): MetricComparison[] {
  const rows = new Map<string, MetricComparison>();
  const evaluation = (m: { stage?: string | null }) => (m.stage ?? "evaluation") === "evaluation";
  for (const m of run.metrics.challenger.filter(evaluation)) {
    rows.set(m.name, { name: m.name, challenger: m.value, direction: m.direction ?? undefined, description: m.description ?? undefined });
    const found = interval(m.low, m.high);
    if (found) rows.get(m.name)!.challengerInterval = found;
  }
  for (const m of run.metrics.champion.filter(evaluation)) {
    const row: MetricComparison = rows.get(m.name) ?? { name: m.name, direction: m.direction ?? undefined, description: m.description ?? undefined };
    row.champion = m.value;
    const found = interval(m.low, m.high);
    if (found) row.championInterval = found;
    rows.set(m.name, row);
  }
  const deltas = run.evaluation?.deltas ?? {};
  for (const row of rows.values()) {
    if (row.challenger !== undefined && row.champion !== undefined) {
      row.delta = row.challenger - row.champion;
      const paired = interval(deltas[row.name]?.low, deltas[row.name]?.high);
      if (paired) row.deltaInterval = paired;
      if (row.direction) {
        const up = row.direction === "maximize" ? 1 : -1;
        if (paired) {
          // Better or worse only when the paired interval leaves 0 out.
          if (up * paired[0] > 0 && up * paired[1] > 0) row.better = true;
          else if (up * paired[0] < 0 && up * paired[1] < 0) row.better = false;
        } else if (Math.abs(row.delta) >= 5e-4) {
          row.better = up * row.delta > 0;
        }
      }
    }
  }
  return [...rows.values()];
}

/** What a delta means for the approver, in words. */
export function describeDelta(row: Pick<MetricComparison, "delta" | "better" | "deltaInterval">): string {
  if (row.delta === undefined) return "";
  if (row.better === true) return "better";
  if (row.better === false) return "worse";
  return row.deltaInterval ? "no clear difference" : "";
}

export function formatDelta(delta?: number): string {
  if (delta === undefined) return "—";
  if (Math.abs(delta) < 5e-4) return "±0.000"; // no "−0.000"
  return (delta > 0 ? "+" : "−") + Math.abs(delta).toFixed(3);
}

/** `[0.880, 0.939]` (signed for a difference: `[−0.010, +0.028]`); "" without an interval. */
export function formatInterval(range?: [number, number] | null, signed = false): string {
  if (!range) return "";
  const one = (v: number) => (signed ? formatDelta(v) : formatNumber(v));
  return `[${one(range[0])}, ${one(range[1])}]`;
}

const METRIC_TITLES: Record<string, string> = {
  accuracy: "Accuracy",
  balancedAccuracy: "Balanced accuracy",
  macroF1: "Macro F1",
  auroc: "AUROC",
  logLoss: "Log loss",
  expectedCalibrationError: "Calibration error (ECE)",
  meanDice: "Mean Dice",
  meanIoU: "Mean IoU",
};

const PER_LABEL_TITLES: Record<string, string> = {
  precision: "Precision (PPV)",
  recall: "Recall (sensitivity)",
  dice: "Dice",
  iou: "IoU",
  sensitivity: "Sensitivity",
  specificity: "Specificity",
  ppv: "Positive predictive value (PPV)",
  npv: "Negative predictive value (NPV)",
};

/** The measures at the operating point, in reading order. */
export const AT_POINT = ["sensitivity", "specificity", "ppv", "npv"] as const;
export type AtPoint = (typeof AT_POINT)[number];

/** One line each, in plain words, for a label. */
export function explainAtPoint(family: AtPoint, label: string): string {
  switch (family) {
    case "sensitivity":
      return `Of the images that are ${label}, the share the model calls ${label}.`;
    case "specificity":
      return `Of the images that are not ${label}, the share the model does not call ${label}.`;
    case "ppv":
      return `Of the images the model calls ${label}, the share that are ${label}.`;
    case "npv":
      return `Of the images the model does not call ${label}, the share that are not ${label}.`;
  }
}

/** `sensitivity:tumor` → ["sensitivity", "tumor"]; undefined for other metrics. */
export function atPointOf(name: string): [AtPoint, string] | undefined {
  const at = name.indexOf(":");
  const family = name.slice(0, at) as AtPoint;
  return at > 0 && (AT_POINT as readonly string[]).includes(family) ? [family, name.slice(at + 1)] : undefined;
}

/** The comparison rows of the measures at the operating point, grouped by label. */
export function operatingPointRows(run: Pick<Run, "metrics"> & Partial<Pick<Run, "evaluation">>): (MetricComparison & {
  family: AtPoint;
  label: string;
})[] {
  const rows = compareMetrics(run).flatMap((r) => {
    const found = atPointOf(r.name);
    return found ? [{ ...r, family: found[0], label: found[1] }] : [];
  });
  const labels = [...new Set(rows.map((r) => r.label))];
  return rows.sort(
    (a, b) => labels.indexOf(a.label) - labels.indexOf(b.label) || AT_POINT.indexOf(a.family) - AT_POINT.indexOf(b.family),
  );
}

const RULES: Record<OperatingPoint["rule"], string> = {
  youden: "the best sensitivity + specificity (Youden's J)",
  targetSensitivity: "the highest threshold that reaches the target sensitivity",
  targetSpecificity: "the lowest threshold that reaches the target specificity",
  argmax: "no threshold: the most confident label",
};

/** "tumor when its confidence is at least 0.412" and how it was chosen, in plain words. */
export function describeOperatingPoint(point?: OperatingPoint | null): { decision: string; chosen: string } {
  if (!point) return { decision: "Not chosen yet.", chosen: "" };
  if (point.threshold === undefined || !point.positiveLabel) {
    return { decision: "The most confident label (no threshold).", chosen: point.note ? `${capital(point.note)}.` : "" };
  }
  const target = point.target !== undefined ? ` (${Math.round(point.target * 100)} %)` : "";
  const on = point.chosenOn;
  const there = on
    ? ` There it gave sensitivity ${formatNumber(on.sensitivity)} and specificity ${formatNumber(on.specificity)} on ${on.images} validation images (${on.positives} ${point.positiveLabel.name}).`
    : "";
  return {
    decision: `${point.positiveLabel.name} when its confidence is at least ${formatNumber(point.threshold)}; otherwise the most confident other label.`,
    chosen: `Chosen on the validation split by the platform: ${RULES[point.rule]}${target}${point.default ? " (the default rule)" : ""}.${there}`,
  };
}

function capital(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A metric's name in plain words ("balancedAccuracy" → "Balanced accuracy", "recall:tumor" →
 * "Recall (sensitivity) — tumor"); names it does not know stay as they are. */
export function metricTitle(name: string): string {
  if (METRIC_TITLES[name]) return METRIC_TITLES[name];
  const at = name.indexOf(":");
  if (at > 0 && PER_LABEL_TITLES[name.slice(0, at)]) return `${PER_LABEL_TITLES[name.slice(0, at)]} — ${name.slice(at + 1)}`;
  return name;
}

/** "449 images · 101 independent clusters" (images only for runs evaluated before clusters). */
export function describeTestSet(evaluation: Run["evaluation"]): string {
  if (evaluation?.testExamples === undefined) return "";
  const images = `${evaluation.testExamples} test image${evaluation.testExamples === 1 ? "" : "s"}`;
  const clusters = evaluation.testClusters;
  if (clusters === undefined || clusters === null) return images;
  return `${images} · ${clusters} independent cluster${clusters === 1 ? "" : "s"}`;
}

/** What the intervals are, in a sentence (empty for runs evaluated without them). */
export function describeResampling(evaluation: Run["evaluation"]): string {
  const r = evaluation?.resampling;
  if (!r) return "";
  const level = Math.round(r.level * 100);
  const unit =
    evaluation?.clusterField === "cluster"
      ? "a patient, or a group of copies of one image where larger"
      : evaluation?.clusterField === "patientKey"
        ? "a patient (this snapshot predates copy groups)"
        : "one image (this snapshot names no patients)";
  const few = r.clusters < 30 ? " With fewer than 30 clusters the intervals are rough." : "";
  return (
    `Brackets: ${level} % intervals from ${r.resamples.toLocaleString("en")} resamples of the independent clusters ` +
    `(a cluster is ${unit}); differences are paired (both models on the same resamples).${few}`
  );
}

export type View =
  | { kind: "models" }
  | { kind: "model"; modelId?: string; dagId?: string; tab?: string }
  | { kind: "run"; modelId?: string; runId?: string; dagId?: string; dagRunId?: string; tab?: string }
  | { kind: "modelCard"; modelId?: string; runId?: string };

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
    case "modelCard":
      return { kind: "modelCard", modelId: get("modelId"), runId: get("runId") };
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
  user?: string,
): ApprovalState {
  const blocked = (blocker: string) => ({ blocker });
  if (!mayDecide) return blocked(decideReason ?? "You may not decide on runs of this model.");
  if (run.status === "running") return blocked("The run is still running; it can be decided once evaluated.");
  if (run.status === "failed") return blocked("The run failed; only an evaluated run can be decided.");
  const last = run.approvals[run.approvals.length - 1];
  const partial = last?.decision === "approved" && last.criteria?.approvals?.complete === false;
  if (partial) {
    // Two-person rule: another person may still approve (or reject); the same one may not.
    const progress = last.criteria!.approvals!;
    if (user && progress.approvedBy.includes(user)) {
      return blocked(
        `You approved this run already; ${progress.remaining} more approval${progress.remaining === 1 ? "" : "s"} by another person ${progress.remaining === 1 ? "is" : "are"} needed.`,
      );
    }
  } else if (last) {
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
    case "awaiting approval":
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

/** Who did something, in the same words everywhere (issue 31: "Triggered by" mixed
 * `airflow-user:admin` and `dr-approver`): a person by their user name, Airflow's own actors
 * in words. `raw` is the audit trail's spelling (for a tooltip). */
export function describeActor(actor?: string | null): { name: string; person: boolean; raw: string } {
  const raw = actor ?? "";
  if (!actor) return { name: "—", person: false, raw };
  if (actor.startsWith("airflow-user:")) return { name: actor.slice("airflow-user:".length), person: true, raw };
  if (actor === "airflow:schedule") return { name: "Airflow schedule", person: false, raw };
  if (actor === "airflow:asset-trigger") return { name: "Airflow (drift signal)", person: false, raw };
  if (actor.startsWith("airflow:")) {
    const task = actor.slice("airflow:".length).split(".").pop();
    return { name: task ? `pipeline (${task} task)` : "Airflow", person: false, raw };
  }
  if (actor === "airflow") return { name: "Airflow", person: false, raw };
  if (actor === "system") return { name: "the platform", person: false, raw };
  return { name: actor, person: true, raw };
}

/** "1 group", "294 groups". */
export function plural(count: number, one: string, many = `${one}s`): string {
  return `${count.toLocaleString("en")} ${count === 1 ? one : many}`;
}

/** A run's status as a reader means it: a run whose training and evaluation succeeded but that
 * waits for a decision is "awaiting approval", not "succeeded" (issue 31). */
export function runStage(run: Pick<Run, "status" | "approvalStatus">): { status: string; detail?: string } {
  if (run.status === "succeeded" && run.approvalStatus === "pending") {
    return { status: "awaiting approval", detail: "Trained and evaluated; the pipeline waits for an approver's decision." };
  }
  if (run.status === "succeeded" && run.approvalStatus === "timedOut") {
    return { status: "approval timed out", detail: "Trained and evaluated; nobody decided within the approval window." };
  }
  return { status: run.status };
}
