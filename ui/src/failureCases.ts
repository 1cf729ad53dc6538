/** The run's failure cases (evaluation.failureCases): the challenger's most confident test errors
 * at its operating point, with saliency maps and their faithfulness. */

export type PictureName = "image" | "occlusion" | "grad-cam";

export interface Faithfulness {
  /** Area under the probability curve while the map's cells are hidden, most salient first. */
  deletionAuc: number;
  /** The same for random orders (the mean of randomOrders of them). */
  randomDeletionAuc: number;
  /** randomDeletionAuc − deletionAuc: above 0, the map beats chance. */
  difference: number;
  /** deletionAuc / randomDeletionAuc: below 1, the map beats chance. */
  ratio: number | null;
  randomOrders: number;
  steps: number;
}

export interface LabelRef {
  index: number;
  name: string;
}

export interface FailureCase {
  case: number;
  exampleId: string;
  kind: "falseNegative" | "falsePositive" | "missed";
  trueLabel: LabelRef;
  predictedLabel: LabelRef;
  confidence: number;
  trueLabelConfidence: number;
  pictures?: PictureName[];
  maps: Partial<Record<"occlusion" | "grad-cam", { method: string; faithfulness: Faithfulness }>>;
  mapsError?: string;
}

export interface FailureCases {
  perClass: number;
  /** At most one case per independence cluster (copies of one slice make the same error). */
  onePerCluster?: boolean;
  decidedBy: string;
  classes: { trueLabel: LabelRef; errors: number; images: number; shown: number }[];
  cases: FailureCase[];
  methods: ("occlusion" | "grad-cam")[];
  containerMap: boolean;
  saliency: { grid: number; steps: number; randomOrders: number; fill: string };
  cost: { images: number; requests: number; seconds: number; inferenceSeconds: number; evaluationSeconds?: number };
}

export const MAP_TITLES: Record<"occlusion" | "grad-cam", string> = {
  occlusion: "Occlusion (platform)",
  "grad-cam": "Grad-CAM (container)",
};

/** The API path of a case's picture (served to readers only; never a storage path). */
export function picturePath(modelId: string, runId: string, item: FailureCase, name: PictureName): string {
  return `/models/${modelId}/runs/${runId}/failure-cases/${item.case}/${name}.png`;
}

/** What a group of cases is, in words: false negatives / positives for a positive label. */
export function groupTitle(kind: FailureCase["kind"] | undefined, trueLabel: LabelRef): string {
  if (kind === "falseNegative") return `False negatives: ${trueLabel.name} called something else`;
  if (kind === "falsePositive") return `False positives: ${trueLabel.name} called positive`;
  return `Missed ${trueLabel.name}: true ${trueLabel.name}, another label called`;
}

/** A faithfulness figure as a verdict a reader can act on. */
export function faithfulnessVerdict(f: Faithfulness): { text: string; tone: "good" | "weak" | "bad" } {
  const ratio = f.ratio ?? Number.POSITIVE_INFINITY;
  const figures = `deletion AUC ${f.deletionAuc.toFixed(2)} vs ${f.randomDeletionAuc.toFixed(2)} random`;
  if (ratio < 0.8) return { text: `faithful: ${figures}`, tone: "good" };
  if (ratio < 1) return { text: `barely better than random: ${figures}`, tone: "weak" };
  return { text: `no better than random, do not trust this map: ${figures}`, tone: "bad" };
}

export const FAITHFULNESS_EXPLAINED =
  "Faithfulness: the map's regions are hidden most-salient first and the predicted label's probability is tracked; " +
  "a map that shows what the model really uses makes it fall faster than hiding random regions (lower deletion AUC).";

/** The cost of the maps next to the evaluation's own time, in one line. */
export function describeCost(cost: FailureCases["cost"]): string {
  const maps = `Maps: ${cost.seconds.toFixed(1)} s for ${cost.images} model calls in ${cost.requests} requests`;
  return cost.evaluationSeconds !== undefined
    ? `${maps}; the evaluation itself: ${cost.evaluationSeconds.toFixed(1)} s.`
    : `${maps}.`;
}
