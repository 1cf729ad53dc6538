// The generated client as the pages use it: the same requests as before it (same-origin path,
// the extended view, the `ui` channel, the session cookie), ApiErrors, one request for two
// components asking the same thing, and writes invalidating what they changed.
import { cleanup, render, screen, waitFor } from "@testing-library/react";
import { useQuery } from "@tanstack/react-query";
import { afterEach, describe, expect, it, vi } from "vitest";

import { ApiError } from "./api";
import { createApproval, getModel } from "./client/sdk.gen";
import { Providers } from "./components/Providers";
import { modelOptions, useDecision } from "./queries";
import { createQueryClient } from "./queryClient";

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

function answer(status: number, body: unknown) {
  const fetch = vi.fn(async () => new Response(JSON.stringify(body), { status }));
  vi.stubGlobal("fetch", fetch);
  return fetch;
}

describe("the generated client", () => {
  it("reads same-origin in the extended view with the session cookie", async () => {
    const fetch = answer(200, { model: { id: "m1" } });
    const { data } = await getModel({ path: { model_id: "m1" }, throwOnError: true });
    expect(data.model.id).toBe("m1");
    const [url, init] = fetch.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe("/v1/patient-ml/models/m1?view=extended");
    expect(init.credentials).toBe("same-origin");
    expect(init.method).toBe("GET");
  });

  it("writes JSON with the ui channel and throws the API's error as an ApiError", async () => {
    const fetch = answer(422, { error: { message: "Too short", fix: "Say why", errors: [{ field: "description", message: "short" }] } });
    const written = createApproval({
      path: { model_id: "m1", run_id: "r1" },
      body: { decision: "rejected", description: "no" },
      throwOnError: true,
    });
    await expect(written).rejects.toBeInstanceOf(ApiError);
    await expect(written).rejects.toMatchObject({ status: 422, message: "Too short", fix: "Say why" });
    const [url, init] = fetch.mock.calls[0] as unknown as [string, RequestInit & { headers: Record<string, string> }];
    expect(url).toBe("/v1/patient-ml/models/m1/runs/r1/approvals");
    expect(init.method).toBe("POST");
    expect(init.headers["X-Patient-ML-Channel"]).toBe("ui");
    expect(init.headers["Content-Type"]).toBe("application/json");
    expect(JSON.parse(init.body as string)).toEqual({ decision: "rejected", description: "no" });
  });
});

function ModelName({ id }: { id: string }) {
  const model = useQuery(modelOptions("m1"));
  return <p data-testid={id}>{model.data?.model.name ?? "…"}</p>;
}

describe("the query cache", () => {
  it("asks once for two components that show the same model", async () => {
    const fetch = answer(200, { model: { id: "m1", name: "brain-clf" } });
    render(
      <Providers client={createQueryClient({ retry: false })}>
        <ModelName id="a" />
        <ModelName id="b" />
      </Providers>,
    );
    await waitFor(() => expect(screen.getByTestId("a").textContent).toBe("brain-clf"));
    expect(screen.getByTestId("b").textContent).toBe("brain-clf");
    expect(fetch).toHaveBeenCalledTimes(1);
  });

  it("reloads a model's queries after a decision on one of its runs", async () => {
    const client = createQueryClient({ retry: false });
    let decide: ReturnType<typeof useDecision> | undefined;
    function Page() {
      decide = useDecision("m1");
      return <ModelName id="a" />;
    }
    const fetch = answer(200, { model: { id: "m1", name: "brain-clf" } });
    render(
      <Providers client={client}>
        <Page />
      </Providers>,
    );
    await waitFor(() => expect(screen.getByTestId("a").textContent).toBe("brain-clf"));
    await decide!.mutateAsync({ path: { model_id: "m1", run_id: "r1" }, body: { decision: "approved" } });
    await waitFor(() => expect(fetch).toHaveBeenCalledTimes(3)); // read, decision, read again
    expect((fetch.mock.calls[2] as unknown as [string])[0]).toBe("/v1/patient-ml/models/m1?view=extended");
  });
});
