import { ChakraProvider } from "@chakra-ui/react";
import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import type { ReactElement } from "react";
import { afterEach, describe, expect, it, vi } from "vitest";

import { openInAirflow } from "../navigation";
import { system } from "../theme";
import { AirflowDagLink } from "./AirflowDagLink";

// Only the move into Airflow's window is replaced; airflowDagUrl stays the real one.
vi.mock("../navigation", async (importOriginal) => ({
  ...(await importOriginal<typeof import("../navigation")>()),
  openInAirflow: vi.fn(),
}));

function show(link: ReactElement) {
  render(<ChakraProvider value={system}>{link}</ChakraProvider>);
  return screen.getByRole("link");
}

afterEach(() => {
  cleanup();
  vi.mocked(openInAirflow).mockClear();
});

describe("AirflowDagLink", () => {
  it("links to the DAG in Airflow's UI", () => {
    const link = show(<AirflowDagLink dagId="brain tumour">brain tumour</AirflowDagLink>);
    expect(link.getAttribute("href")).toBe("/dags/brain%20tumour");
    expect(link.textContent).toBe("brain tumour");
  });

  it("links to one of the DAG's runs", () => {
    const link = show(
      <AirflowDagLink dagId="brain" dagRunId="manual__2026-01-01T00:00:00+00:00">
        Airflow DAG run
      </AirflowDagLink>,
    );
    expect(link.getAttribute("href")).toBe("/dags/brain/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00");
  });

  it("a click opens the page in Airflow's window instead of following the link", () => {
    const link = show(
      <AirflowDagLink dagId="brain" dagRunId="r1">
        run r1
      </AirflowDagLink>,
    );
    const followed = fireEvent.click(link);
    expect(followed).toBe(false); // default prevented: the iframe does not load Airflow
    expect(openInAirflow).toHaveBeenCalledTimes(1);
    expect(openInAirflow).toHaveBeenCalledWith("/dags/brain/runs/r1");
  });
});
