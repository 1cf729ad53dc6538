// What exactly trained and served a run: the images as the backend resolved them, the trainer's
// Python and key libraries, the package's version and source commit, the sampler's seed; and a
// warning when an image tag named another image in an earlier run of the model.
import { Alert, Box, Code, Flex, Text } from "@chakra-ui/react";
import type { ReactNode } from "react";

import type { ImageRecord, RunProvenance, TagMove } from "../api";
import { Empty } from "./common";

/** `sha256:0123456789ab` (a digest, image id or local-sha256 value, shortened). */
export function shortDigest(digest?: string, length = 12): string {
  if (!digest) return "unknown";
  const at = digest.lastIndexOf(":");
  return at < 0 ? digest.slice(0, length) : `${digest.slice(0, at)}:${digest.slice(at + 1, at + 1 + length)}`;
}

export function tagMoveText(move: TagMove): string {
  return (
    `The ${move.role} image tag ${move.reference} moved between runs: run ${move.previousRunSlug} used ` +
    `${shortDigest(move.previousDigest)}, this run ${shortDigest(move.digest)}.`
  );
}

function Row({ label, children }: { label: string; children: ReactNode }) {
  return (
    <Flex gap={3} mb={1} fontSize="sm">
      <Text color="fg.muted" minW="40" flexShrink={0}>
        {label}
      </Text>
      <Box minW={0} wordBreak="break-all">
        {children}
      </Box>
    </Flex>
  );
}

function ImageFacts({ image, what }: { image?: ImageRecord | null; what: string }) {
  if (!image) return <Row label={what}>not recorded</Row>;
  return (
    <Row label={what}>
      <Code fontSize="xs">{image.reference}</Code> on {image.backend}
      {" · "}
      {image.digest ? (
        <Code fontSize="xs" title={image.digest} data-testid={`${image.role}-digest`}>
          {shortDigest(image.digest)}
        </Code>
      ) : (
        "digest not recorded"
      )}
      {image.repoDigests && image.repoDigests.length > 0 && (
        <Text fontSize="xs" color="fg.muted">
          repository digests: {image.repoDigests.join(", ")}
        </Text>
      )}
      {image.resolvedImage && (
        <Text fontSize="xs" color="fg.muted">
          SageMaker resolved: {image.resolvedImage}
        </Text>
      )}
    </Row>
  );
}

export function ProvenancePanel({ provenance }: { provenance?: RunProvenance }) {
  if (!provenance) {
    return <Empty>Not recorded yet: the run records its provenance when tuning ends.</Empty>;
  }
  const { trainer, sampler } = provenance;
  const pkg = provenance.package;
  const libraries = Object.entries(trainer?.libraries ?? {})
    .map(([name, version]) => `${name} ${version}`)
    .join(", ");
  return (
    <Box data-testid="provenance">
      {(provenance.tagMoved ?? []).map((move) => (
        <Alert.Root key={move.role} status="warning" mb={3} data-testid="tag-moved">
          <Alert.Indicator />
          <Alert.Title>{tagMoveText(move)}</Alert.Title>
        </Alert.Root>
      ))}
      <ImageFacts image={provenance.training} what="Training image" />
      <ImageFacts image={provenance.inference} what="Inference image" />
      <Row label="Trainer">
        {trainer ? (
          <>
            Python {trainer.python ?? "?"}
            {libraries ? `; ${libraries}` : ""}
            <Text as="span" color="fg.muted">
              {" "}
              ({trainer.reportedBy === "trainer" ? "reported by the trainer" : `the local interpreter ${trainer.interpreter ?? ""}`})
            </Text>
          </>
        ) : (
          "not reported (the trainer wrote no environment.json)"
        )}
      </Row>
      <Row label="Package">
        {pkg ? (
          <span data-testid="package-commit">
            {pkg.name} {pkg.version}, commit <Code fontSize="xs">{pkg.commit === "unknown" ? "unknown" : pkg.commit.slice(0, 12)}</Code>
            {pkg.dirty ? " with uncommitted changes" : ""}
            <Text as="span" color="fg.muted">
              {" "}
              (from {pkg.commitSource === "direct_url" ? "the pip install" : pkg.commitSource === "env" ? "PATIENT_ML_SOURCE_COMMIT" : pkg.commitSource})
            </Text>
          </span>
        ) : (
          "not recorded"
        )}
      </Row>
      <Row label="Sampler">
        {sampler ? (
          <span data-testid="sampler-seed">
            Optuna {sampler.name}, seed {sampler.seed} (trial n: {sampler.trialSeed}), {sampler.pruner}
            {provenance.bestTrial !== undefined ? `; the model is trial ${provenance.bestTrial}'s` : ""}
          </span>
        ) : (
          "not recorded"
        )}
      </Row>
    </Box>
  );
}
