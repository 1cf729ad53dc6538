import { describe, expect, it } from "vitest";

import type { Run } from "./api";
import { deployOffer, type DeployOptions, rollbackRows } from "./deploy";

const approved = { decision: "approved" as const, actor: "user" as const, user: "dr-a" };

function run(overrides: Partial<Run> = {}): Run {
  return {
    id: "r1",
    slug: "calm-otter-1",
    modelId: "m1",
    status: "succeeded",
    metrics: { challenger: [], champion: [] },
    approvals: [approved],
    ...overrides,
  } as unknown as Run; // the fields these tests read
}

const allowed = { allowed: true };
const refused = (reason: string) => ({ allowed: false, reason });
const options = (deploy: DeployOptions["deploy"], rollback: DeployOptions["rollback"]) => ({ deploy, rollback });

describe("deployOffer", () => {
  it("offers nothing on the deployed champion or a run that is not evaluated", () => {
    const champion = run({ deployStatus: "succeeded" });
    expect(deployOffer(champion, "r1", options(allowed, refused("current")))).toEqual({ action: null, note: null });
    expect(deployOffer(run({ status: "running", approvals: [] }), null, options(allowed, allowed)).action).toBeNull();
  });

  it("offers Deploy for an approved run the pipeline did not deploy (e.g. its deploy failed)", () => {
    const failed = run({ deployStatus: "failed" });
    expect(deployOffer(failed, "r0", options(allowed, refused("never champion"))).action).toBe("deploy");
  });

  it("offers Roll back for an earlier champion, and Deploy once the rollback is approved", () => {
    const earlier = run({ deployStatus: "succeeded" });
    const plain = refused("deploying it again is a rollback");
    expect(deployOffer(earlier, "r2", options(plain, allowed)).action).toBe("rollback");
    const rolledBack = run({ deployStatus: "failed", approvals: [approved, { ...approved, criteria: { rollback: true } }] });
    expect(deployOffer(rolledBack, "r2", options(allowed, allowed)).action).toBe("deploy");
  });

  it("tells why an approved run cannot be deployed here, in the API's words", () => {
    const waiting = run();
    const pipeline = "Run r1's pipeline (Airflow DAG run manual__1, running) deploys it after the approval";
    expect(deployOffer(waiting, "r0", options(refused(pipeline), refused("never champion")))).toEqual({
      action: null,
      note: pipeline,
    });
    const viewer = "User 'viewer' may not deploy runs of model 'm'";
    const earlier = run({ deployStatus: "succeeded" });
    expect(deployOffer(earlier, "r2", options(refused(viewer), refused(viewer))).note).toBe(viewer);
    expect(deployOffer(run({ deployStatus: "deploying" }), "r0", options(refused("x"), refused("y"))).note).toMatch(
      /being deployed/,
    );
  });

  it("leaves undecided and rejected runs to the approval form", () => {
    const pending = run({ approvals: [] });
    expect(deployOffer(pending, null, options(refused("not decided"), refused("never champion")))).toEqual({
      action: null,
      note: null,
    });
  });
});

describe("rollbackRows", () => {
  it("offers one rollback per earlier champion, never on the current one", () => {
    const rows = [
      { id: 3, runId: "a", isCurrent: true },
      { id: 2, runId: "b", isCurrent: false },
      { id: 1, runId: "a", isCurrent: false },
      { id: 0, runId: "b", isCurrent: false },
    ];
    expect([...rollbackRows(rows, "a")].map((r) => r.id)).toEqual([2]);
  });
});
