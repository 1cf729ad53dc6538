import { ChakraProvider } from "@chakra-ui/react";
import { cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";

import type { RunProvenance } from "../api";
import { system } from "../theme";
import { ProvenancePanel, shortDigest, tagMoveText } from "./ProvenancePanel";

const OLD = "sha256:" + "1".repeat(64);
const NEW = "sha256:" + "2".repeat(64);

const provenance: RunProvenance = {
  training: {
    role: "training",
    reference: "team/trainer:1",
    backend: "docker",
    digest: NEW,
    imageId: NEW,
    repoDigests: ["registry/team/trainer@sha256:" + "3".repeat(64)],
  },
  inference: { role: "inference", reference: "team/server:1", backend: "docker", digest: "sha256:" + "4".repeat(64) },
  trainer: { python: "3.11.2", libraries: { numpy: "1.24.2", torch: "1.13.1" }, reportedBy: "trainer" },
  package: { name: "patient-ml-airflow", version: "0.1.0", commit: "0123456789abcdef0123", dirty: true, commitSource: "git" },
  sampler: { name: "TPESampler", seed: 7, trialSeed: "seed * 100003 + n", pruner: "MedianPruner" },
  bestTrial: 3,
  tagMoved: [
    {
      role: "training",
      reference: "team/trainer:1",
      digest: NEW,
      previousDigest: OLD,
      previousRunId: "r1",
      previousRunSlug: "calm-otter-7",
    },
  ],
};

afterEach(cleanup);

function show(p?: RunProvenance) {
  render(
    <ChakraProvider value={system}>
      <ProvenancePanel provenance={p} />
    </ChakraProvider>,
  );
}

describe("ProvenancePanel", () => {
  it("names both digests when a tag moved between runs", () => {
    show(provenance);
    expect(screen.getByTestId("tag-moved").textContent).toBe(
      "The training image tag team/trainer:1 moved between runs: run calm-otter-7 used sha256:111111111111, this run sha256:222222222222.",
    );
  });

  it("shows the images, trainer, package and sampler", () => {
    show(provenance);
    expect(screen.getByTestId("training-digest").textContent).toBe("sha256:222222222222");
    expect(screen.getByTestId("training-digest").getAttribute("title")).toBe(NEW);
    expect(screen.getByTestId("inference-digest").textContent).toBe("sha256:444444444444");
    const text = screen.getByTestId("provenance").textContent ?? "";
    expect(text).toContain("Python 3.11.2; numpy 1.24.2, torch 1.13.1 (reported by the trainer)");
    expect(text).toContain("registry/team/trainer@sha256:");
    expect(screen.getByTestId("package-commit").textContent).toBe(
      "patient-ml-airflow 0.1.0, commit 0123456789ab with uncommitted changes (from git)",
    );
    expect(screen.getByTestId("sampler-seed").textContent).toBe(
      "Optuna TPESampler, seed 7 (trial n: seed * 100003 + n), MedianPruner; the model is trial 3's",
    );
  });

  it("says what is not recorded", () => {
    show({ training: { role: "training", reference: "x:1", backend: "sagemaker", resolvedImage: "x:1" } });
    const text = screen.getByTestId("provenance").textContent ?? "";
    expect(text).toContain("digest not recorded");
    expect(text).toContain("SageMaker resolved: x:1");
    expect(text).toContain("not reported (the trainer wrote no environment.json)");
    expect(screen.queryByTestId("tag-moved")).toBeNull();
    cleanup();
    show(undefined);
    expect(screen.getByText(/Not recorded yet/)).toBeTruthy();
  });

  it("shortens digests of every kind", () => {
    expect(shortDigest("local-sha256:" + "f".repeat(64))).toBe("local-sha256:ffffffffffff");
    expect(shortDigest(undefined)).toBe("unknown");
    expect(tagMoveText(provenance.tagMoved![0])).toContain("calm-otter-7 used sha256:111111111111");
  });
});
