import { ChakraProvider } from "@chakra-ui/react";
import { cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";

import { system } from "../theme";
import { UpstreamSelection, type UpstreamReport } from "./UpstreamSelection";

afterEach(cleanup);

const upstream: UpstreamReport = {
  modelId: "m1",
  modelName: "brain-mri-tumour-classifier",
  rule: "predictions of model brain-mri-tumour-classifier (m1): decided label in ['tumour']",
  predictionsRead: 3000,
  imagesWithPrediction: 3000,
  imagesSelected: 1512,
  leftOutNotSelected: 1488,
  leftOutWithoutPrediction: 0,
  batches: [{ batchId: "b-1", runId: "r-1", predictions: 3000, selected: 1512 }],
};

describe("UpstreamSelection", () => {
  it("says which model chose the images, how many, and from which batch", () => {
    render(
      <ChakraProvider value={system}>
        <UpstreamSelection upstream={upstream} />
      </ChakraProvider>,
    );
    expect(screen.getByTestId("upstream-summary").textContent).toBe(
      "1,512 images selected by the predictions of model brain-mri-tumour-classifier; left out: 1,488 it did " +
        "not select, 0 without a prediction.",
    );
    expect(screen.getByText(/decided label in \['tumour'\]/)).toBeTruthy();
    const cells = [...screen.getByTestId("upstream-batches").querySelectorAll("td")].map((c) => c.textContent);
    expect(cells).toEqual(["b-1", "r-1", "3,000", "1,512"]);
  });
});
