// The examples API as the labelling page calls it (extended view: status, references, counts).

import { api, apiUrl } from "../api";
import type { LabelDef } from "./mask";

export type Status = "unlabeled" | "draft" | "confirmed";

export interface HistoryEntry {
  observation: string;
  status: "draft" | "confirmed" | "superseded";
  fhirStatus?: string;
  at?: number;
  by?: string;
  labelIndex?: number;
  labelName?: string;
  value?: string;
  note?: string;
}

export interface ExampleItem {
  id: string;
  updatedAt: number;
  exampleType: "imgClf" | "imgSeg";
  image: { fileId: string };
  label?: { isConfirmed: boolean; classes?: number[]; mask?: { fileId: string }; lastConfirmedBy?: string; updatedAt?: number };
  status: Status;
  documentReference: string;
  patient: string;
  patientKey: string;
  split: string;
  labelVersion: string;
  labelName?: string;
  conflict?: boolean;
  labelHistory?: HistoryEntry[];
  /** The current champion's kept prediction (when the list was asked with its modelId). */
  prediction?: KeptPrediction;
}

export interface KeptPrediction {
  runId: string;
  at?: number;
  labelIndex?: number;
  labelName?: string;
  confidence?: number;
  fractions?: Record<string, number>;
}

export interface Counts {
  total: number;
  unlabeled: number;
  draft: number;
  confirmed: number;
}

export interface Filters {
  status?: Status;
  labelIndex?: number;
  split?: string;
  patientKey?: string;
  /** Whether the champion of `modelId` has predicted the example (a hint was answered). */
  hasPrediction?: "true" | "false";
  /** The model whose champion's predictions count (and are shown on the examples). */
  modelId?: string;
}

/** The filters the Examples tab starts with: unlabeled examples, with the champion's kept
 * predictions shown when the model has a champion. */
export function initialFilters(model: { id: string; championId?: string | null }): Filters {
  return model.championId ? { status: "unlabeled", modelId: model.id } : { status: "unlabeled" };
}

/** A tile's words for a kept prediction: "tumor 93%", or the labels a predicted mask shows. */
export function describePrediction(p: KeptPrediction, labels: LabelDef[]): string {
  if (p.labelIndex !== undefined) {
    const name = p.labelName ?? labels.find((l) => l.index === p.labelIndex)?.name ?? `label ${p.labelIndex}`;
    return p.confidence !== undefined ? `${name} ${Math.round(p.confidence * 100)}%` : name;
  }
  const shown = Object.entries(p.fractions ?? {})
    .filter(([index, fraction]) => index !== "0" && fraction > 0)
    .map(([index]) => labels.find((l) => l.index === Number(index))?.name ?? `label ${index}`);
  return shown.length ? `mask: ${shown.join(", ")}` : "mask: background only";
}

export interface DatasetInfo {
  id: string;
  name: string;
  problemDefinition: { problemType: "imgClf" | "imgSeg"; labelDefinition: { labels: LabelDef[] } };
}

/** The keyset marker of "after this example id" (the API's own marker format). */
export function markerAfter(id: string): string {
  return btoa(JSON.stringify({ after: id })).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function listExamples(datasetId: string, filters: Filters, limit: number, marker?: string) {
  return api<{ examples: ExampleItem[]; marker?: string; counts: Counts }>(`/datasets/${datasetId}/examples`, {
    query: { ...filters, limit, marker },
  });
}

export async function getExample(datasetId: string, exampleId: string): Promise<ExampleItem> {
  return (await api<{ example: ExampleItem }>(`/datasets/${datasetId}/examples/${encodeURIComponent(exampleId)}`)).example;
}

export function previewUrl(datasetId: string, exampleId: string, size?: number): string {
  return apiUrl(`/datasets/${datasetId}/examples/${encodeURIComponent(exampleId)}/preview.png`, size ? { size } : {});
}

/** The example after `id` (in id order) with this status, wrapping round to the first. */
export async function nextWithStatus(datasetId: string, filters: Filters, id: string, status: Status): Promise<string | null> {
  const narrowed = { ...filters, status };
  const after = await listExamples(datasetId, narrowed, 1, markerAfter(id));
  if (after.examples.length) return after.examples[0].id;
  const first = await listExamples(datasetId, narrowed, 1);
  return first.examples.find((e) => e.id !== id)?.id ?? null;
}

export async function saveClassLabel(datasetId: string, example: ExampleItem, index: number, confirmed: boolean) {
  return api<ExampleItem>(`/datasets/${datasetId}/examples/${encodeURIComponent(example.id)}/label`, {
    method: "PUT",
    body: { labelType: "imgClf", classes: [index], isConfirmed: confirmed },
    headers: { "If-Match": example.labelVersion },
  });
}

export async function saveMaskLabel(
  datasetId: string,
  example: ExampleItem,
  size: { width: number; height: number },
  areas: { id: string; rle: number[] }[],
  confirmed: boolean,
) {
  const path = `/datasets/${datasetId}/examples/${encodeURIComponent(example.id)}`;
  const file = await api<{ fileId: string }>(`${path}/label-file`, {
    method: "PUT",
    body: { labelType: "imgSeg", projectId: datasetId, height: size.height, width: size.width, areas },
  });
  return api<ExampleItem>(`${path}/label`, {
    method: "PUT",
    body: { labelType: "imgSeg", mask: { fileId: file.fileId }, isConfirmed: confirmed },
    headers: { "If-Match": example.labelVersion },
  });
}

export function getLabelFile(datasetId: string, exampleId: string) {
  return api<{ labelData: null | { height: number; width: number; areas: { id: string; rle: number[] }[] } }>(
    `/datasets/${datasetId}/examples/${encodeURIComponent(exampleId)}/label-file`,
  );
}

export interface Hint {
  problemType: "imgClf" | "imgSeg";
  runId: string;
  predictions?: { index: number; name?: string; confidence: number; value: boolean }[];
  mask?: string; // base64 PNG, pixel = label index
  width?: number;
  height?: number;
}

export async function getHint(datasetId: string, exampleId: string, modelId: string): Promise<Hint> {
  return (
    await api<{ hint: Hint }>(`/datasets/${datasetId}/examples/${encodeURIComponent(exampleId)}/hint`, {
      query: { modelId },
    })
  ).hint;
}

/** A predicted mask (base64 PNG) as label indices at the image's size (nearest neighbour). */
export async function decodeMaskPng(b64: string, width: number, height: number, known: Set<number>): Promise<Uint8Array> {
  const img = new Image();
  img.src = `data:image/png;base64,${b64}`;
  await img.decode();
  const c = document.createElement("canvas");
  c.width = width;
  c.height = height;
  const ctx = c.getContext("2d")!;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(img, 0, 0, width, height);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const out = new Uint8Array(width * height);
  for (let p = 0; p < out.length; p++) out[p] = known.has(rgba[p * 4]) ? rgba[p * 4] : 0;
  return out;
}
