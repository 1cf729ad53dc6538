// What the run page and the Deployments tab offer: deploy an approved run, or roll back to an
// earlier champion. The API decides (GET .../deploy-options gives its answer without acting);
// this only chooses which of the allowed actions to show and which refusal is worth telling.

import type { Run } from "./api";

export interface DeployOption {
  allowed: boolean;
  reason?: string;
}

export interface DeployOptions {
  deploy: DeployOption;
  rollback: DeployOption;
}

export interface DeployOffer {
  /** The one action to offer, if any. */
  action: "deploy" | "rollback" | null;
  /** Why the action a user would expect here is not possible (the API's words), if any. */
  note: string | null;
}

export function deployOffer(
  run: Pick<Run, "id" | "status" | "approvals" | "deployStatus">,
  championId: string | null | undefined,
  options: DeployOptions,
): DeployOffer {
  if (run.status !== "succeeded") return { action: null, note: null };
  if (championId === run.id && run.deployStatus === "succeeded") return { action: null, note: null };
  const last = run.approvals[run.approvals.length - 1];
  // A rollback approved before whose deployment failed: deploy it (no second approval needed).
  if (options.deploy.allowed && last?.decision === "approved") return { action: "deploy", note: null };
  if (options.rollback.allowed) return { action: "rollback", note: null };
  if (last?.decision !== "approved") return { action: null, note: null }; // the approval form speaks
  if (run.deployStatus === "deploying") return { action: null, note: "The run is being deployed." };
  // Approved, not deployed, and neither action allowed: say why (the pipeline deploys it, or
  // the user may not deploy). An earlier champion's rollback refusal is the one that matters.
  const wasChampion = run.deployStatus === "succeeded";
  return { action: null, note: (wasChampion ? options.rollback.reason : options.deploy.reason) ?? null };
}

/** Newest first: the one row per run that may offer "Roll back" (not the current champion). */
export function rollbackRows<T extends { runId: string; isCurrent: boolean }>(
  rows: T[],
  championId: string | null | undefined,
): Set<T> {
  const seen = new Set<string>();
  const offered = new Set<T>();
  for (const row of rows) {
    if (seen.has(row.runId)) continue;
    seen.add(row.runId);
    if (!row.isCurrent && row.runId !== championId) offered.add(row);
  }
  return offered;
}
