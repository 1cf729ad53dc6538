// The config form's logic: which fields it has, turning the form into the API's body, and
// placing the API's field-level errors (422 `errors: [{field, message}]`) next to the fields.

import type { FieldError } from "./api";

export type ConfigKind = "model" | "dataset";

export interface FormField {
  key: string;
  label: string;
  json: boolean;
  help: string;
}

export const FIELDS: Record<ConfigKind, FormField[]> = {
  model: [
    { key: "name", label: "Name", json: false, help: "Unique; the DAG is patient_ml__<name>." },
    { key: "description", label: "Description", json: false, help: "Intended use; shown in the model card." },
    { key: "datasetId", label: "Dataset", json: false, help: "The dataset the model trains on." },
    { key: "trainingApproach", label: "Training approach", json: true, help: "Image, objective, search space, trials, schedule (JSON)." },
    { key: "deployApproach", label: "Deploy approach", json: true, help: "cloud or edge, and the inference image (JSON)." },
    { key: "approvalPolicy", label: "Approval policy", json: true, help: "Approvers, timeout, automatic approval (JSON)." },
  ],
  dataset: [
    { key: "name", label: "Name", json: false, help: "Unique name of the dataset." },
    { key: "description", label: "Description", json: false, help: "What the images are and who labelled them." },
    { key: "problemDefinition", label: "Problem definition", json: true, help: "Problem type, labels, FHIR filter (JSON)." },
    { key: "curation", label: "Curation", json: true, help: "Split ratios and quality rules (JSON)." },
    { key: "source", label: "Source", json: true, help: "Where the FHIR data comes from (JSON)." },
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

export type FormValues = Record<string, string>;

export function toFormValues(kind: ConfigKind, config: Record<string, unknown>): FormValues {
  const values: FormValues = {};
  for (const f of FIELDS[kind]) {
    const v = config[f.key];
    values[f.key] = f.json ? JSON.stringify(v ?? {}, null, 2) : v === undefined || v === null ? "" : String(v);
  }
  return values;
}

/** The request body, or the fields whose JSON does not parse (with where). */
export function toBody(
  kind: ConfigKind,
  values: FormValues,
  base: Record<string, unknown> = {},
): { body?: Record<string, unknown>; errors: FieldError[] } {
  const body: Record<string, unknown> = { ...base };
  const errors: FieldError[] = [];
  for (const f of FIELDS[kind]) {
    const text = values[f.key] ?? "";
    if (!f.json) {
      body[f.key] = text;
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

/** The API's field errors grouped by the form field they belong to ("trainingApproach.maxTrials"
 * → trainingApproach); errors of no field of the form are under "". */
export function errorsByField(kind: ConfigKind, errors: FieldError[]): Record<string, FieldError[]> {
  const keys = new Set(FIELDS[kind].map((f) => f.key));
  const grouped: Record<string, FieldError[]> = {};
  for (const e of errors) {
    const head = e.field.split(/[.[]/, 1)[0];
    const key = keys.has(head) ? head : "";
    (grouped[key] ??= []).push(e);
  }
  return grouped;
}
