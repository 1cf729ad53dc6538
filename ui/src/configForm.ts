// The config form's logic: which fields it has, turning the form into the API's body, and
// placing the API's field-level errors (422 `errors: [{field, message}]`) next to the fields.

import type { FieldError } from "./api";

export type ConfigKind = "model" | "dataset";

export interface FormField {
  key: string;
  label: string;
  /** An object: shown as a sub-form (or, on request, as JSON text). */
  json: boolean;
  help: string;
}

export const FIELDS: Record<ConfigKind, FormField[]> = {
  model: [
    { key: "name", label: "Name", json: false, help: "Unique; the DAG is patient_ml__<name>." },
    { key: "description", label: "Description", json: false, help: "What the model does; the model card's intended use unless Model card gives one." },
    { key: "datasetId", label: "Dataset", json: false, help: "The dataset the model trains on." },
    { key: "trainingApproach", label: "Training approach", json: true, help: "Image, objective, search space, trials, schedule." },
    { key: "deployApproach", label: "Deploy approach", json: true, help: "cloud or edge, and the inference image." },
    { key: "approvalPolicy", label: "Approval policy", json: true, help: "Approvers, timeout, automatic approval." },
    {
      key: "modelCard",
      label: "Model card",
      json: true,
      help: "Intended use, intended users, out-of-scope uses and known limitations, shown in every run's model card.",
    },
  ],
  dataset: [
    { key: "name", label: "Name", json: false, help: "Unique name of the dataset." },
    { key: "description", label: "Description", json: false, help: "What the images are and who labelled them." },
    { key: "problemDefinition", label: "Problem definition", json: true, help: "Problem type, labels, FHIR filter." },
    { key: "curation", label: "Curation", json: true, help: "Split ratios and quality rules." },
    { key: "source", label: "Source", json: true, help: "Where the FHIR data comes from." },
  ],
};

export const TEMPLATES: Record<ConfigKind, Record<string, unknown>> = {
  model: {
    name: "",
    description: "",
    datasetId: "",
    trainingApproach: {
      type: "tuningJob",
      trainingImage: "patient-ml/img-clf-trainer:0.1.0",
      objective: { metric: "balancedAccuracy", direction: "maximize" },
      searchSpace: [{ type: "continuous", name: "learning_rate", min: 0.0001, max: 0.1, scale: "log" }],
      maxTrials: 4,
      parallelTrials: 1,
    },
    deployApproach: { type: "cloud", inferenceImage: "patient-ml/img-clf-trainer:0.1.0" },
    approvalPolicy: { approvers: [], timeoutHours: 72 },
    modelCard: { intendedUse: "", intendedUsers: [], outOfScope: [], limitations: [] },
  },
  dataset: {
    name: "",
    description: "",
    problemDefinition: {
      problemType: "imgClf",
      labelDefinition: { labels: [{ name: "negative", index: 0 }, { name: "positive", index: 1 }] },
      trainingDataFilter: { filterType: "FhirCodesFilter", codes: ["http://loinc.org|24590-2"] },
    },
    curation: { splitRatios: { train: 0.7, validation: 0.15, test: 0.15 } },
    source: { type: "fhirServer", connId: "fhir_default" },
  },
};

export type Path = (string | number)[];
export type Config = Record<string, unknown>;

/** A path as the API names fields in its errors: `trainingApproach.searchSpace[0].min`. */
export function pathText(path: Path): string {
  let text = "";
  for (const part of path) {
    if (typeof part === "number") text += `[${part}]`;
    else text += text ? `.${part}` : part;
  }
  return text;
}

/** The path with list positions left out (`trainingApproach.searchSpace[].type`), for rules
 * that hold for every item of a list. */
export function pathPattern(path: Path): string {
  return path.map((p, i) => (typeof p === "number" ? "[]" : i === 0 ? p : `.${p}`)).join("");
}

/** A copy of `root` with the value at `path` replaced (`undefined`: the key removed). */
export function setAt<T>(root: T, path: Path, value: unknown): T {
  if (path.length === 0) return value as T;
  const [head, ...rest] = path;
  if (Array.isArray(root)) {
    const copy = [...root];
    copy[head as number] = setAt(copy[head as number], rest, value);
    return copy as T;
  }
  const copy: Config = { ...((root ?? {}) as Config) };
  const next = setAt(copy[head as string], rest, value);
  if (next === undefined) delete copy[head as string];
  else copy[head as string] = next;
  return copy as T;
}

export function getAt(root: unknown, path: Path): unknown {
  let here = root;
  for (const part of path) {
    if (here === null || typeof here !== "object") return undefined;
    here = (here as Record<string | number, unknown>)[part];
  }
  return here;
}

/** A copy of `root` without the list item at `path`. */
export function removeAt<T>(root: T, path: Path): T {
  const list = getAt(root, path.slice(0, -1));
  if (!Array.isArray(list)) return root;
  const index = path[path.length - 1] as number;
  return setAt(root, path.slice(0, -1), list.filter((_, i) => i !== index));
}

/** What "Add" puts in a list: a blank item of the list's kind. */
const ITEM_TEMPLATES: Record<string, unknown> = {
  "trainingApproach.searchSpace[]": { type: "continuous", name: "", min: 0, max: 1, scale: "linear" },
  "trainingApproach.metricDefinitions[]": { name: "", regex: "" },
  "approvalPolicy.autoApproval.guardrails[]": { metric: "", maxRegression: 0 },
  "approvalPolicy.nonInferiority[]": { metric: "", margin: 0.02, scope: "overall" },
  "problemDefinition.labelDefinition.labels[]": { name: "", description: "" },
};

export function newItem(listPath: Path, list: unknown[]): unknown {
  const known = ITEM_TEMPLATES[`${pathPattern(listPath)}[]`];
  if (known !== undefined) return structuredClone(known);
  const last = list[list.length - 1];
  if (typeof last === "number") return 0;
  if (last !== null && typeof last === "object") return blank(last);
  return "";
}

function blank(value: unknown): unknown {
  if (Array.isArray(value)) return [];
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value as Config).map(([k, v]) => [k, blank(v)]));
  }
  return typeof value === "number" ? 0 : typeof value === "boolean" ? false : "";
}

/** The choices of fields that take one of a few values (the product's own enumerations). */
const ENUMS: Record<string, string[]> = {
  "trainingApproach.type": ["tuningJob"],
  "trainingApproach.objective.direction": ["maximize", "minimize"],
  "trainingApproach.searchSpace[].type": ["continuous", "integer", "categorical"],
  "trainingApproach.searchSpace[].scale": ["linear", "log"],
  "deployApproach.type": ["cloud", "edge"],
  "approvalPolicy.nonInferiority[].scope": [
    "overall",
    "overallAndSubgroups",
    "overallAndLargeSubgroups",
  ],
  "problemDefinition.problemType": ["imgClf", "imgSeg"],
  "problemDefinition.trainingDataFilter.filterType": ["FhirCodesFilter"],
  "source.type": ["fhirServer", "ndjson"],
};

export function enumOptions(path: Path): string[] | undefined {
  return ENUMS[pathPattern(path)];
}

/** "maxTrials" → "Max trials". */
export function labelOf(key: string | number): string {
  if (typeof key === "number") return `#${key + 1}`;
  const words = key.replace(/([a-z0-9])([A-Z])/g, "$1 $2").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** A leaf's typed text as the value to send: numbers stay numbers when the text is one (else
 * the text is sent and the API names the field); an empty field is left out. */
export function parseLeaf(text: string, like: unknown): unknown {
  if (text === "") return typeof like === "string" ? "" : undefined;
  if (typeof like === "number") {
    const n = Number(text.trim());
    return text.trim() !== "" && Number.isFinite(n) ? n : text;
  }
  return text;
}

/** Every node the form renders (objects, lists and leaves), as API paths. */
export function renderedPaths(value: unknown, base: Path = []): Set<string> {
  const out = new Set<string>();
  const walk = (v: unknown, path: Path) => {
    out.add(pathText(path));
    if (Array.isArray(v)) v.forEach((item, i) => walk(item, [...path, i]));
    else if (v !== null && typeof v === "object") {
      for (const [k, child] of Object.entries(v as Config)) walk(child, [...path, k]);
    }
  };
  walk(value, base);
  out.delete("");
  return out;
}

/** Each API error under the deepest rendered field its path starts with (the field itself
 * when the form shows it; else the object or list that lacks it); "" for none. */
export function errorsByPath(errors: FieldError[], rendered: Set<string>): Record<string, FieldError[]> {
  const grouped: Record<string, FieldError[]> = {};
  for (const e of errors) {
    let at = e.field;
    while (at && !rendered.has(at)) at = parentPath(at);
    (grouped[at] ??= []).push(e);
  }
  return grouped;
}

function parentPath(text: string): string {
  const cut = Math.max(text.lastIndexOf("."), text.lastIndexOf("["));
  return cut <= 0 ? "" : text.slice(0, cut);
}

/** The config's form state: the sections' values; a section may be edited as JSON text. */
export interface FormState {
  config: Config;
  json: Record<string, string>;
}

export function toFormState(kind: ConfigKind, config: Config): FormState {
  const picked: Config = {};
  for (const f of FIELDS[kind]) {
    const v = config[f.key];
    picked[f.key] = f.json ? structuredClone(v ?? {}) : v === undefined || v === null ? "" : String(v);
  }
  return { config: picked, json: {} };
}

/** The request body, or the sections whose JSON text does not parse (with where). */
export function toBody(
  kind: ConfigKind,
  state: FormState,
  base: Config = {},
): { body?: Config; errors: FieldError[] } {
  const body: Config = { ...base };
  const errors: FieldError[] = [];
  for (const f of FIELDS[kind]) {
    const text = state.json[f.key];
    if (text === undefined) {
      body[f.key] = state.config[f.key];
      continue;
    }
    try {
      body[f.key] = text.trim() === "" ? undefined : JSON.parse(text);
    } catch (e) {
      errors.push({ field: f.key, message: `is not valid JSON (${(e as Error).message})` });
    }
  }
  return errors.length ? { errors } : { body, errors };
}
