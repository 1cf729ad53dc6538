// The model card as a document (GET .../model-card/document): the API's ModelCardDocument,
// with what the page needs to show it. Values that are not known are left out (never null).

import { API_BASE } from "./api";

export interface Estimate {
  value: number;
  low?: number;
  high?: number;
}

export type Verdict = "better" | "worse" | "shownBetter" | "shownWorse" | "same";

export interface CardMetric {
  name: string;
  title: string;
  direction: "maximize" | "minimize";
  challenger?: Estimate;
  champion?: Estimate;
  difference?: Estimate;
  verdict?: Verdict;
}

export interface ModelCardDocument {
  format: "patient-ml-model-card-document/1";
  title: string;
  generatedAt: string;
  model: { id: string; name: string; revision: number };
  run: { id: string; slug: string; status: string; triggeredBy: string; started: string; ended?: string };
  problem: { problemType: "imgClf" | "imgSeg"; title: string; labels: { index: number; name: string; description?: string }[] };
  intendedUse: { summary: string; declared: boolean; intendedUsers: string[]; outOfScope: string[] };
  provenance: {
    datasetName: string;
    fhirSource: { kind: "fhirServer" | "ndjson"; name: string };
    inclusionCodes: string[];
    snapshotId?: string;
    snapshotCreated?: string;
    recordsRead?: number;
    quarantined?: number;
    splits: { split: string; images: number; patients?: number; clusters?: number }[];
    nearDuplicateGroups?: number;
    testImagesWithCopyInTrain?: number;
  };
  population: {
    prevalence: { split: string; label: string; images: number; share: number }[];
    subgroupsRecorded: boolean;
    subgroups: {
      name: string;
      images?: number;
      clusters?: number;
      small: boolean;
      prevalence: { label: string; share: number }[];
      metrics: CardMetric[];
    }[];
    note: string;
  };
  performance: {
    evaluated: boolean;
    note?: string;
    testImages?: number;
    testClusters?: number;
    testImagesLeftOut: number;
    intervals?: string;
    championRun?: string;
    labelsChanged: boolean;
    metrics: CardMetric[];
    operatingPoint?: { rule: string; description: string; positiveLabel?: string; threshold?: number };
  };
  failureGallery: {
    recorded: boolean;
    note: string;
    classes: {
      label: string;
      errors?: number;
      images?: number;
      cases: {
        exampleId: string;
        trueLabel: string;
        predictedLabel: string;
        confidence?: number;
        maps: { name: string; url: string }[];
        mapsError?: string;
      }[];
    }[];
  };
  calibration: {
    recorded: boolean;
    note: string;
    challengerError?: Estimate;
    championError?: Estimate;
    bins: { confidence: number; accuracy: number; count: number }[];
  };
  limitations: { text: string; source: "declared" | "derived" }[];
  lineage: {
    snapshotId?: string;
    testSetSha256?: string;
    trainingImage: string;
    trainingImageDigest?: string;
    trainingBackend?: string;
    trainingRepoDigests?: string[];
    trainingResolvedImage?: string;
    inferenceImage: string;
    inferenceImageDigest?: string;
    modelArtifactSha256?: string;
    packageVersion: string;
    /** False: the run recorded none; the version shown is the current one. */
    packageVersionRecorded?: boolean;
    sourceCommit?: string;
    sourceDirty?: boolean;
    trainerPython?: string;
    trainerLibraries?: string[];
    trainerReportedBy?: "trainer" | "host";
    sampler?: string;
    bestTrial?: number;
    objective: string;
    hyperparameters: { name: string; value: string }[];
    /** Image tags that named another image in an earlier run of the model. */
    tagMoves?: string[];
  };
  approval: {
    status: string;
    minApprovers: number;
    decisions: {
      decision: string;
      by: string;
      actor: "user" | "system";
      at: string;
      justification: string;
      channel?: string;
      override?: string;
      overrideReasons: string[];
      rollback: boolean;
      partial?: string;
    }[];
  };
  deployment: { type: string; status: string; error?: string; isChampion: boolean };
}

export const NOT_RECORDED = "not recorded";

export function modelCardPath(modelId: string, runId: string): string {
  return `/models/${encodeURIComponent(modelId)}/runs/${encodeURIComponent(runId)}/model-card`;
}

/** The Markdown download (same origin: the browser sends the Airflow session). */
export function markdownUrl(modelId: string, runId: string): string {
  return `${API_BASE}${modelCardPath(modelId, runId)}/markdown`;
}

/** `2026-12-06T18:52:31Z` → `2026-12-06 18:52 UTC`; absent: "not recorded". */
export function shownTime(iso?: string): string {
  if (!iso) return NOT_RECORDED;
  const found = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(iso);
  return found ? `${found[1]} ${found[2]} UTC` : iso;
}

function number(value: number, signed: boolean): string {
  const text = Math.abs(value).toFixed(3);
  if (value < 0 && text !== "0.000") return `−${text}`;
  return signed ? `+${text}` : text;
}

/** `0.912 [0.880, 0.939]`; a difference `+0.012 [−0.010, +0.035]`; absent: "—". */
export function formatEstimate(estimate?: Estimate, signed = false): string {
  if (!estimate) return "—";
  let text = number(estimate.value, signed);
  if (estimate.low !== undefined && estimate.high !== undefined) {
    text += ` [${number(estimate.low, signed)}, ${number(estimate.high, signed)}]`;
  }
  return text;
}

export const VERDICTS: Record<Verdict, { text: string; palette: string }> = {
  shownBetter: { text: "better ✓", palette: "green" },
  better: { text: "better (interval includes 0)", palette: "gray" },
  same: { text: "same", palette: "gray" },
  worse: { text: "worse (interval includes 0)", palette: "orange" },
  shownWorse: { text: "worse ✗", palette: "red" },
};

/** A failure case's picture: an http(s) URL as is, an API path (`/models/...`) under the API. */
export function pictureUrl(url: string): string {
  return url.startsWith("/models/") ? `${API_BASE}${url}` : url;
}

export function formatShare(share: number): string {
  return `${(share * 100).toFixed(1)} %`;
}
