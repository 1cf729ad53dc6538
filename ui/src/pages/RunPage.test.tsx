// The run overview as issue 31 found it: an orange "No decision possible here" on runs already
// decided (the decision printed twice), and "succeeded" on a run that still waits for approval.

import { cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import type { Run } from "../api";
import { runStage } from "../format";
import { Providers } from "../components/Providers";
import { createQueryClient } from "../queryClient";
import { RunPage } from "./RunPage";

const MODEL = {
  id: "m1",
  name: "brain-clf",
  description: "",
  datasetId: "d1",
  championId: null,
  dagId: "patient_ml__brain_clf",
  slug: "brain_clf",
  trainingApproach: {},
  deployApproach: { type: "cloud" },
};

function serve(run: Partial<Run>, mayDecide = false) {
  const full = {
    id: "r1",
    slug: "calm-otter-1",
    modelId: "m1",
    status: "succeeded",
    triggeredBy: "airflow-user:admin",
    metrics: { challenger: [], champion: [] },
    approvals: [],
    ...run,
  };
  const permissions = { user: "viewer", mayRead: true, mayEdit: false, mayStartRun: false, mayDecide };
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string) => {
      const { pathname } = new URL(url, "http://airflow");
      const body = pathname.endsWith("/permissions")
        ? { permissions }
        : pathname.endsWith("/deploy-options")
          ? { deployOptions: { deploy: { allowed: false }, rollback: { allowed: false } } }
        : pathname.endsWith("/runs/r1")
          ? { run: full }
          : pathname.endsWith("/models/m1")
            ? { model: MODEL }
            : {};
      return new Response(JSON.stringify(body), { status: 200 });
    }),
  );
}

function show() {
  render(
    <Providers client={createQueryClient({ retry: false })}>
      <RunPage view={{ kind: "run", modelId: "m1", runId: "r1" }} go={() => {}} />
    </Providers>,
  );
}

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

describe("run overview", () => {
  it("says a decided run's decision once, with no 'No decision possible here' box", async () => {
    serve({
      approvalStatus: "rejected",
      approvals: [{ decision: "rejected", actor: "user", user: "dr-approver", description: "worse on tumours", timestamp: 1_765_000_000_000 }],
    } as Partial<Run>);
    show();
    const decisions = await screen.findByTestId("decisions");
    expect(decisions.textContent).toContain("rejected by dr-approver");
    expect(screen.queryByTestId("approval-blocked")).toBeNull();
    expect(screen.queryByText("No decision possible here")).toBeNull();
    expect(document.body.textContent?.match(/dr-approver/g)).toHaveLength(1);
  });

  it("says 'awaiting approval', not 'succeeded', while the run waits for a decision", async () => {
    serve({ approvalStatus: "pending" } as Partial<Run>);
    show();
    const stage = await screen.findByTestId("run-stage");
    expect(stage.textContent).toBe("awaiting approval");
    // Who may not decide sees who may and why, above the disabled form (the panel's notice).
    expect(await screen.findByTestId("approval-who")).toBeTruthy();
    expect(screen.queryByTestId("approval-blocked")).toBeNull();
  });

  it("keeps 'succeeded' for a run that is decided or needs no decision", () => {
    expect(runStage({ status: "succeeded", approvalStatus: "approved" }).status).toBe("succeeded");
    expect(runStage({ status: "running", approvalStatus: "notRequested" }).status).toBe("running");
    expect(runStage({ status: "succeeded", approvalStatus: "pending" }).status).toBe("awaiting approval");
  });
});
