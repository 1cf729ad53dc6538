import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import { TEMPLATES } from "../configForm";
import { createQueryClient } from "../queryClient";
import { ConfigForm } from "./ConfigForm";
import { Providers } from "./Providers";

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

function server(save: { status: number; body: unknown }) {
  const fetch = vi.fn(async (url: string, init?: RequestInit) => {
    if ((init?.method ?? "GET") === "GET" && url.includes("/datasets")) {
      return new Response(JSON.stringify({ datasets: [{ id: "d1", name: "brain" }] }), { status: 200 });
    }
    return new Response(JSON.stringify(save.body), { status: save.status });
  });
  vi.stubGlobal("fetch", fetch);
  return fetch;
}

const stored = { ...TEMPLATES.model, id: "m1", name: "brain-clf", datasetId: "d1" };

function show() {
  const onSaved = vi.fn();
  const { container } = render(
    <Providers client={createQueryClient({ retry: false })}>
      <ConfigForm kind="model" stored={stored} go={() => undefined} onSaved={onSaved} />
    </Providers>,
  );
  return { container, onSaved };
}

describe("ConfigForm", () => {
  it("shows nested settings as fields and sends them typed", async () => {
    const fetch = server({ status: 200, body: { model: { id: "m1" } } });
    const { container, onSaved } = show();
    const max = container.querySelector<HTMLInputElement>('input[name="trainingApproach.searchSpace[0].max"]')!;
    expect(max.value).toBe("0.1");
    fireEvent.change(max, { target: { value: "0.05" } });
    const scale = container.querySelector<HTMLSelectElement>('select[name="trainingApproach.searchSpace[0].scale"]')!;
    expect([...scale.options].map((o) => o.value)).toEqual(["linear", "log"]);
    fireEvent.click(screen.getByRole("button", { name: "Add approver" }));
    fireEvent.change(container.querySelector('input[name="approvalPolicy.approvers[0]"]')!, {
      target: { value: "dr-approver" },
    });
    fireEvent.click(screen.getByRole("button", { name: "Save" }));
    await waitFor(() => expect(onSaved).toHaveBeenCalled());
    const put = fetch.mock.calls.find(([, init]) => init?.method === "PUT")!;
    const body = JSON.parse(String(put[1]!.body));
    expect(body.trainingApproach.searchSpace[0].max).toBe(0.05);
    expect(body.approvalPolicy.approvers).toEqual(["dr-approver"]);
    expect(body.id).toBeUndefined(); // computed fields are not sent back
  });

  it("puts the API's field errors under the exact nested field", async () => {
    server({
      status: 422,
      body: {
        error: {
          status: 422,
          message: "model config 'brain-clf' is invalid",
          errors: [
            { field: "trainingApproach.searchSpace[0].min", message: "must be less than max (0.1)" },
            { field: "approvalPolicy.timeoutHours", message: "must be greater than 0" },
          ],
        },
      },
    });
    show();
    fireEvent.click(screen.getByRole("button", { name: "Save" }));
    const min = await screen.findByTestId("error-trainingApproach.searchSpace[0].min");
    expect(min.textContent).toBe("must be less than max (0.1)");
    expect(screen.getByTestId("error-approvalPolicy.timeoutHours").textContent).toContain("greater than 0");
    // The error sits in the field of that input.
    const input = min.closest("[data-part=root]")?.querySelector("input");
    expect(input?.getAttribute("name")).toBe("trainingApproach.searchSpace[0].min");
  });
});
