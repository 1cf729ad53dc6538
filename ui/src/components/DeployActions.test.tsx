import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import { createQueryClient } from "../queryClient";
import { Providers } from "./Providers";
import { ConfirmDeploy, type DeployAction } from "./DeployActions";

function show(action: DeployAction) {
  const onDone = vi.fn();
  const onClose = vi.fn();
  render(
    <Providers client={createQueryClient({ retry: false })}>
      <ConfirmDeploy
        action={action}
        modelId="m1"
        modelName="brain"
        runId="r1"
        runSlug="calm-otter-1"
        deployType="edge"
        onClose={onClose}
        onDone={onDone}
      />
    </Providers>,
  );
  return { onDone, onClose };
}

function answer(status: number, body: unknown) {
  const fetch = vi.fn().mockResolvedValue(new Response(JSON.stringify(body), { status }));
  vi.stubGlobal("fetch", fetch);
  return fetch;
}

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

describe("ConfirmDeploy", () => {
  it("asks first: nothing is sent until the deployment is confirmed", async () => {
    const fetch = answer(200, { deployment: { runId: "r1", deployType: "edge", action: "promote" } });
    const { onDone, onClose } = show("deploy");
    expect(await screen.findByText("Deploy run calm-otter-1?")).toBeTruthy();
    expect(fetch).not.toHaveBeenCalled();
    fireEvent.click(screen.getByRole("button", { name: "Deploy" }));
    await waitFor(() => expect(onDone).toHaveBeenCalled());
    expect(onClose).toHaveBeenCalled();
    expect(fetch.mock.calls[0][0]).toMatch(/\/v1\/patient-ml\/models\/m1\/runs\/r1\/deployment$/);
    expect(fetch.mock.calls[0][1].method).toBe("POST");
    expect(fetch.mock.calls[0][1].headers["X-Patient-ML-Channel"]).toBe("ui");
  });

  it("shows the API's refusal with its fix, and stays open", async () => {
    answer(409, {
      error: {
        status: 409,
        message: "Run r1's pipeline (Airflow DAG run manual__1, running) deploys it after the approval.",
        fix: "wait for the pipeline's deploy task",
      },
    });
    const { onDone, onClose } = show("deploy");
    fireEvent.click(await screen.findByRole("button", { name: "Deploy" }));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("deploys it after the approval");
    expect(alert.textContent).toContain("Fix: wait for the pipeline's deploy task.");
    expect(onDone).not.toHaveBeenCalled();
    expect(onClose).not.toHaveBeenCalled();
  });

  it("rolls back with the justification; the API's field error appears under the field", async () => {
    let fetch = answer(422, {
      error: {
        status: 422,
        message: "approval decision is invalid",
        errors: [{ field: "description", message: "is empty; write why the run is approved or rejected" }],
      },
    });
    const { onDone } = show("rollback");
    expect(await screen.findByText("Roll back brain to run calm-otter-1?")).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Roll back" }));
    expect(await screen.findByText(/Justification is empty/)).toBeTruthy();
    expect(onDone).not.toHaveBeenCalled();
    fetch = answer(200, { approvalDecision: {}, deployment: { runId: "r1", deployType: "edge", action: "rollback" } });
    fireEvent.change(screen.getByRole("textbox"), { target: { value: "run 2 misses small tumours" } });
    fireEvent.click(screen.getByRole("button", { name: "Roll back" }));
    await waitFor(() => expect(onDone).toHaveBeenCalled());
    expect(fetch.mock.calls[0][0]).toMatch(/\/models\/m1\/runs\/r1\/rollback$/);
    expect(JSON.parse(fetch.mock.calls[0][1].body)).toEqual({ description: "run 2 misses small tumours" });
  });
});
