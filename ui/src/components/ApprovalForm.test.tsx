import { ChakraProvider } from "@chakra-ui/react";
import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import type { Run } from "../api";
import { system } from "../theme";
import { ApprovalForm } from "./ApprovalForm";

const run: Run = {
  id: "r1",
  slug: "calm-otter-1",
  modelId: "m1",
  status: "succeeded",
  metrics: { challenger: [], champion: [] },
  approvals: [],
  approvalStatus: "pending",
};

function show(props: Partial<Parameters<typeof ApprovalForm>[0]> = {}) {
  const onDecided = vi.fn();
  render(
    <ChakraProvider value={system}>
      <ApprovalForm run={run} mayDecide onDecided={onDecided} {...props} />
    </ChakraProvider>,
  );
  return onDecided;
}

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

describe("ApprovalForm", () => {
  it("shows a user who may not decide why, and no buttons", () => {
    show({ mayDecide: false, decideReason: "User 'viewer' may not edit the DAG patient_ml__m." });
    expect(screen.getByTestId("approval-blocked").textContent).toContain("viewer");
    expect(screen.queryByRole("button", { name: "Approve" })).toBeNull();
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
});
