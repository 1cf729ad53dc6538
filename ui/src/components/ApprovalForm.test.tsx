import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import type { Run } from "../api";
import { createQueryClient } from "../queryClient";
import { Providers } from "./Providers";
import { ApprovalForm } from "./ApprovalForm";

const run = {
  id: "r1",
  slug: "calm-otter-1",
  modelId: "m1",
  status: "succeeded",
  metrics: { challenger: [], champion: [] },
  approvals: [],
  approvalStatus: "pending",
} as unknown as Run; // the fields these tests read

function show(props: Partial<Parameters<typeof ApprovalForm>[0]> = {}) {
  const onDecided = vi.fn();
  render(
    <Providers client={createQueryClient({ retry: false })}>
      <ApprovalForm run={run} mayDecide onDecided={onDecided} {...props} />
    </Providers>,
  );
  return onDecided;
}

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

describe("ApprovalForm", () => {
  it("shows a user who may not decide who may and why, before anything is typed, with the form disabled", () => {
    show({
      mayDecide: false,
      decideReason: "User 'viewer' may not decide on runs of model m: deciding needs the right to respond.",
      approvers: ["dr-approver", "dr-second"],
    });
    expect(screen.getByTestId("approval-approvers").textContent).toBe("Who may decide: dr-approver, dr-second.");
    expect(screen.getByTestId("approval-reason").textContent).toContain("User 'viewer' may not decide");
    expect((screen.getByRole("textbox") as HTMLTextAreaElement).disabled).toBe(true);
    expect((screen.getByRole("button", { name: "Approve" }) as HTMLButtonElement).disabled).toBe(true);
    expect((screen.getByRole("button", { name: "Reject" }) as HTMLButtonElement).disabled).toBe(true);
    expect(screen.queryByTestId("approval-blocked")).toBeNull();
  });

  it("says anyone with the decision right may decide when the model names no approvers", () => {
    show({ mayDecide: false, decideReason: "no right" });
    expect(screen.getByTestId("approval-approvers").textContent).toBe("Who may decide: any user with the decision right.");
  });

  it("shows an approver the form enabled and no notice", () => {
    show({ approvers: ["dr-approver"], user: "dr-approver" });
    expect(screen.queryByTestId("approval-who")).toBeNull();
    expect((screen.getByRole("textbox") as HTMLTextAreaElement).disabled).toBe(false);
  });

  it("puts the API's justification error next to the field", async () => {
    const error = {
      error: {
        status: 422,
        message: "The request is not valid.",
        errors: [{ field: "description", message: "is empty; write why the run is approved or rejected" }],
      },
    };
    const fetch = vi.fn().mockResolvedValue(new Response(JSON.stringify(error), { status: 422 }));
    vi.stubGlobal("fetch", fetch);
    const onDecided = show();
    fireEvent.click(screen.getByRole("button", { name: "Approve" }));
    await waitFor(() => expect(screen.getByText(/Justification is empty/)).toBeTruthy());
    expect(onDecided).not.toHaveBeenCalled();
    const [url, init] = fetch.mock.calls[0];
    expect(url).toMatch(/\/v1\/patient-ml\/models\/m1\/runs\/r1\/approvals$/);
    expect(JSON.parse(init.body)).toEqual({ decision: "approved", description: "" });
  });

  it("sends the decision with its justification and reports it", async () => {
    const fetch = vi.fn().mockResolvedValue(new Response(JSON.stringify({ approvalDecision: {} }), { status: 200 }));
    vi.stubGlobal("fetch", fetch);
    const onDecided = show();
    fireEvent.change(screen.getByRole("textbox"), { target: { value: "worse on recall" } });
    fireEvent.click(screen.getByRole("button", { name: "Reject" }));
    await waitFor(() => expect(onDecided).toHaveBeenCalled());
    expect(JSON.parse(fetch.mock.calls[0][1].body)).toEqual({ decision: "rejected", description: "worse on recall" });
  });

  it("asks for an explicit override, with its own justification, when the gate requires one", async () => {
    const gate = {
      evaluated: true,
      championId: "r0",
      rules: [],
      passed: false,
      overrideRequired: true,
      overrideReasons: ["fails non-inferiority: Sensitivity of tumor: worst plausible -0.081 is not above -0.02"],
      duplicateOfRejected: [],
      approvals: { required: 1, approvedBy: [], remaining: 1 },
    };
    const refusal = {
      error: { status: 422, message: "The request is not valid.", errors: [{ field: "override", message: "repeats the decision's description" }] },
    };
    const fetch = vi
      .fn()
      .mockResolvedValueOnce(new Response(JSON.stringify(refusal), { status: 422 }))
      .mockResolvedValueOnce(new Response(JSON.stringify({ approvalDecision: {} }), { status: 200 }));
    vi.stubGlobal("fetch", fetch);
    const onDecided = show({ run: { ...run, gate } });
    expect(screen.getByTestId("override-form").textContent).toContain("Sensitivity of tumor");
    const approve = screen.getByRole("button", { name: "Approve with override" }) as HTMLButtonElement;
    expect(approve.disabled).toBe(true); // not before the override is confirmed
    fireEvent.click(screen.getByText("I override the failed change-control rules"));
    await waitFor(() => expect(approve.disabled).toBe(false));
    const [justification, override] = screen.getAllByRole("textbox");
    fireEvent.change(justification, { target: { value: "needed for site B" } });
    fireEvent.change(override, { target: { value: "needed for site B" } });
    fireEvent.click(approve);
    await waitFor(() => expect(screen.getByText(/Override repeats the decision's description/)).toBeTruthy());
    fireEvent.change(override, { target: { value: "a second reader covers the lower sensitivity" } });
    fireEvent.click(approve);
    await waitFor(() => expect(onDecided).toHaveBeenCalled());
    expect(JSON.parse(fetch.mock.calls[1][1].body)).toEqual({
      decision: "approved",
      description: "needed for site B",
      override: { justification: "a second reader covers the lower sensitivity" },
    });
  });

  it("rejects without an override even when one would be needed to approve", async () => {
    const gate = {
      evaluated: true, championId: "r0", rules: [], passed: false, overrideRequired: true,
      overrideReasons: ["is worse on the objective"], duplicateOfRejected: [],
      approvals: { required: 1, approvedBy: [], remaining: 1 },
    };
    const fetch = vi.fn().mockResolvedValue(new Response(JSON.stringify({ approvalDecision: {} }), { status: 200 }));
    vi.stubGlobal("fetch", fetch);
    const onDecided = show({ run: { ...run, gate } });
    fireEvent.change(screen.getByRole("textbox"), { target: { value: "worse" } });
    fireEvent.click(screen.getByRole("button", { name: "Reject" }));
    await waitFor(() => expect(onDecided).toHaveBeenCalled());
    expect(JSON.parse(fetch.mock.calls[0][1].body)).toEqual({ decision: "rejected", description: "worse" });
  });
});
