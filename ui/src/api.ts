// The Patient ML REST API, called with the user's own Airflow session (the `_token` cookie the
// Airflow UI keeps, sent by the browser on same-origin requests): no second login.

import { client } from "./client/client.gen";
import type * as generated from "./client/types.gen";
import type { FailureCases } from "./failureCases";

export const API_BASE = new URL("../v1/patient-ml", document.baseURI).pathname;

export interface FieldError {
  field: string;
  message: string;
  value?: unknown;
}

export class ApiError extends Error {
  status: number;
  fix?: string;
  errors: FieldError[];

  constructor(status: number, message: string, fix?: string, errors: FieldError[] = []) {
    super(message);
    this.status = status;
    this.fix = fix;
    this.errors = errors;
  }
}

export async function parseError(response: Response): Promise<ApiError> {
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON: keep the status line */
  }
  return apiError(response.status, response.statusText, body);
}

/** The ApiError of an answer's status and (parsed) body: the API's ErrorResponse when it is one. */
export function apiError(status: number, statusText: string, body: unknown): ApiError {
  const error = (body as { error?: { message?: string; fix?: string; errors?: FieldError[] } } | null)
    ?.error;
  const message =
    error?.message ??
    (status === 401 ? "Your Airflow session has ended; sign in to Airflow again." : `${status} ${statusText}`);
  return new ApiError(status, message, error?.fix, error?.errors ?? []);
}

function target(path: string, query: Record<string, unknown> = {}, method = "GET"): string {
  const url = new URL(API_BASE + path, window.location.origin);
  // The pages read this platform's extension fields: reads ask for the extended view (the
  // default `reference` view carries only what the reference SDK reads).
  const all = method === "GET" ? { view: "extended", ...query } : query;
  for (const [key, value] of Object.entries(all)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  return url.pathname + url.search;
}

/** The generated client's transport (src/client, `make ui-client`): the same request as every
 * page made before it, a same-origin path with the Airflow session cookie, GETs in the extended
 * view unless they name one, decisions recorded with the channel `ui`. */
export async function transport(input: RequestInfo | URL): Promise<Response> {
  const request = input instanceof Request ? input : new Request(input);
  const url = new URL(request.url);
  const query = Object.fromEntries(url.searchParams);
  const body = request.method === "GET" || request.method === "HEAD" ? undefined : await request.text();
  const headers: Record<string, string> = {};
  request.headers.forEach((value, key) => {
    if (key !== "content-type") headers[key] = value;
  });
  return send(target(url.pathname.slice(API_BASE.length), query, request.method), request.method, body || undefined, headers);
}

client.setConfig({
  baseUrl: window.location.origin + API_BASE,
  fetch: transport,
  // The API answers JSON; a test's Response has no Content-Type to go by.
  parseAs: "json",
});
// Errors thrown by the generated functions and query options are ApiErrors, as the pages show them.
client.interceptors.error.use((error, response) =>
  response ? apiError(response.status, response.statusText, error) : (error as Error),
);

/** A request the generated client does not make yet (see queries.ts for the pages that use it). */
export async function api<T>(
  path: string,
  init: { method?: string; body?: unknown; query?: Record<string, unknown>; headers?: Record<string, string> } = {},
): Promise<T> {
  const method = init.method ?? "GET";
  return request<T>(target(path, init.query, method), method, init.body, init.headers);
}

/** The URL of an API path for an <img> (same origin: the browser sends the Airflow session). */
export function apiUrl(path: string, query: Record<string, unknown> = {}): string {
  return target(path, query, "IMG");
}

function send(url: string, method: string, body?: string, headers?: Record<string, string>): Promise<Response> {
  return fetch(url, {
    method,
    credentials: "same-origin",
    // Decisions made here are recorded with the channel `ui` (the REST API's default is `api`).
    headers: {
      "X-Patient-ML-Channel": "ui",
      ...headers,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    body,
  });
}

async function request<T>(url: string, method: string, body?: unknown, headers?: Record<string, string>): Promise<T> {
  const response = await send(url, method, body === undefined ? undefined : JSON.stringify(body), headers);
  if (!response.ok) throw await parseError(response);
  return (await response.json()) as T;
}

export type ModelSummary = generated.ModelSummary;

export type NextRun = generated.NextRun;

export interface Metric {
  name: string;
  value: number;
  stage?: string;
  direction?: string;
  description?: string;
  /** view=extended: the 95 % interval of an evaluation metric (clusters resampled). */
  low?: number;
  high?: number;
}

/** challenger − champion on one metric, with the paired interval of the difference. */
export interface MetricDelta {
  challenger: number;
  champion: number;
  delta: number;
  improved: boolean;
  low?: number | null;
  high?: number | null;
}

/** How the evaluation's intervals were made, and the independent units they count. */
export interface Resampling {
  method: string;
  unit: "cluster" | "image";
  level: number;
  resamples: number;
  seed: number;
  images: number;
  clusters: number;
}

/** A metric's value with its interval (clusters resampled); low/high absent when none. */
export interface IntervalValue {
  value?: number | null;
  low?: number | null;
  high?: number | null;
  undefined?: number;
}

/** One subgroup of the test set (an attribute value, or a pair of them), as evaluated. */
export interface Subgroup {
  name: string;
  attribute?: string;
  value?: string;
  attributes?: Record<string, string>;
  pair?: boolean;
  images: number;
  clusters: number;
  /** Fewer clusters than subgroupSettings.minClusters: too small to conclude. */
  small: boolean;
  /** Share of each label among the subgroup's test images (imgClf). */
  prevalence?: Record<string, number>;
  challenger: Record<string, number>;
  champion: Record<string, number>;
  intervals?: { challenger?: Record<string, IntervalValue>; champion?: Record<string, IntervalValue> };
  /** challenger − champion, paired. */
  differences: Record<string, IntervalValue>;
}

export interface SubgroupSettings {
  attributes: string[];
  minClusters: number;
  pairs: boolean;
  /** Test images without a value, per attribute. */
  missing?: Record<string, number>;
}

export interface ApprovalDecision {
  decision: "approved" | "rejected";
  actor: "user" | "system";
  user?: string;
  timestamp?: number;
  description?: string;
  criteria?: {
    rollback?: boolean;
    /** An approval past a failed change-control rule: its own justification. */
    override?: { justification: string; reasons?: string[]; failedRules?: string[] };
    /** Under the two-person rule: the approvals so far, and whether this one completed them. */
    approvals?: { required: number; approvedBy: string[]; remaining: number; complete: boolean };
    [key: string]: unknown;
  };
  channel?: string;
}

/** The decision threshold chosen on the validation split (imgClf), stored with the run. */
export interface OperatingPoint {
  rule: "youden" | "targetSensitivity" | "targetSpecificity" | "argmax";
  positiveLabel?: { index: number; name: string };
  threshold?: number;
  target?: number;
  default?: boolean;
  chosenOn?: {
    split: string;
    images: number;
    positives: number;
    negatives: number;
    sensitivity: number;
    specificity: number;
  };
  note?: string;
  /** Test counts at the point, by label index (evaluation.operatingPoints only). */
  counts?: Record<string, { tp: number; fn: number; fp: number; tn: number }>;
}

/** One non-inferiority rule in one stratum of the test set. */
export interface GateRule {
  metric: string;
  title: string;
  margin: number;
  scope: string;
  stratum: string;
  small?: boolean;
  passed: boolean;
  challenger?: number;
  champion?: number;
  difference?: number;
  low?: number;
  high?: number;
  worstPlausible?: number;
  detail: string;
}

/** A run rejected earlier with the same snapshot, hyperparameters and training image. */
export interface RejectedTwin {
  runId: string;
  slug: string;
  modelId: string;
  rejectedBy: string;
  rejectedAt?: number;
  description?: string | null;
}

/** The change-control gate of a run (GET .../runs/{id}?view=extended). */
export interface Gate {
  evaluated: boolean;
  championId?: string | null;
  rules: GateRule[];
  passed: boolean;
  objective?: {
    metric: string;
    title: string;
    challenger: number;
    champion: number;
    difference: number;
    low?: number | null;
    high?: number | null;
    worse: boolean;
    detail: string;
  } | null;
  overrideRequired: boolean;
  overrideReasons: string[];
  duplicateOfRejected: RejectedTwin[];
  approvals: { required: number; approvedBy: string[]; remaining: number };
}

export interface ConfusionMatrix {
  labels: (string | number)[];
  counts: number[][];
}

export type ImageRecord = generated.ImageRecord;

export type TagMove = generated.TagMove;

export type RunProvenance = generated.RunProvenance;

/** A run's evaluation (view=extended; the API types it as an object: this is what it holds). */
export interface RunEvaluation {
  testExamples?: number;
  /** Independent clusters among the test images (patients, or copy groups where larger). */
  testClusters?: number | null;
  /** Field of the snapshot manifest the clusters came from. */
  clusterField?: "cluster" | "patientKey" | "id" | null;
  /** Test images left out because a copy of them is in the train split. */
  testExamplesLeftOut?: number;
  resampling?: Resampling | null;
  testSetSha256?: string;
  championId?: string | null;
  deltas?: Record<string, MetricDelta>;
  confusionMatrix?: Record<string, ConfusionMatrix>;
  reliability?: Record<string, ReliabilityBin[]>;
  /** Each model's operating point (challenger: chosen now; champion: its stored one). */
  operatingPoints?: Record<string, OperatingPoint>;
  /** The challenger's most confident test errors with saliency maps (imgClf). */
  failureCases?: FailureCases;
  /** Subgroups of the test set (sex, age band, site, device, ...), when the snapshot has them. */
  subgroups?: Subgroup[];
  subgroupSettings?: SubgroupSettings | null;
  note?: string;
}

/** A generated type's named fields (without its index signature, which Omit would collapse). */
type Known<T> = { [K in keyof T as string extends K ? never : K]: T[K] };

/** A run (view=extended): the generated ModelRunExtended, with the parts the API leaves untyped
 * (evaluation, gate, operating point, the decisions' criteria) as the pages read them. */
export type Run = Omit<Known<generated.ModelRunExtended>, "evaluation" | "gate" | "operatingPoint" | "approvals"> & {
  approvals: ApprovalDecision[];
  evaluation?: RunEvaluation | null;
  gate?: Gate | null;
  operatingPoint?: OperatingPoint | null;
};

export type ReliabilityBin = generated.ReliabilityBin;

export type Model = generated.ModelConfig;

export type Permissions = generated.ModelPermissions;

export type Trial = generated.Trial;

export type Deployment = generated.DeploymentEntry;

export type LogEvent = generated.LogEvent;

export type DeploymentResult = generated.DeploymentResult;
