// A run's model card as a readable, printable page: intended use, data provenance, population,
// performance with intervals, failure gallery, calibration, limitations, lineage and decisions
// (GET .../model-card/document), with a Markdown download and the browser's print.

import { Badge, Box, Button, Code, Flex, Heading, Link, List, Table, Text } from "@chakra-ui/react";
import type { ReactNode } from "react";

import { useQuery } from "@tanstack/react-query";

import { getModelCardDocumentOptions } from "../client/@tanstack/react-query.gen";
import { Empty, ErrorAlert, Loading, StatusBadge } from "../components/common";
import type { View } from "../format";
import {
  type CardMetric,
  formatEstimate,
  formatShare,
  markdownUrl,
  type ModelCardDocument,
  NOT_RECORDED,
  pictureUrl,
  shownTime,
  VERDICTS,
} from "../modelCard";
import { loaded, useRefetchOn } from "../queries";

type CardView = Extract<View, { kind: "modelCard" }>;

// Printing: only the document (no buttons or links back), tables kept whole where they fit.
const PRINT_CSS = `
@media print {
  [data-print="hide"] { display: none !important; }
  .model-card { font-size: 10pt; color: #000; }
  .model-card section { break-inside: avoid-page; margin-bottom: 12pt; }
  .model-card h1 { font-size: 16pt; }
  .model-card h2 { font-size: 13pt; break-after: avoid-page; }
  .model-card table { width: 100%; border-collapse: collapse; }
  .model-card th, .model-card td { border: 1px solid #999; padding: 2pt 4pt; }
  .model-card a { color: #000; text-decoration: underline; }
}
`;

export function ModelCardPage({ view, go }: { view: CardView; go: (view: View) => void }) {
  const { modelId, runId } = view;
  if (!modelId || !runId) return <ErrorAlert error={new Error("No run given: open a model card from a run's page.")} />;
  return (
    <Box>
      <Flex gap={3} mb={3} wrap="wrap" data-print="hide">
        <Link
          href={`?view=run&modelId=${modelId}&runId=${runId}`}
          color="fg.info"
          onClick={(e) => {
            e.preventDefault();
            go({ kind: "run", modelId, runId });
          }}
        >
          ← Back to the run
        </Link>
      </Flex>
      <ModelCardPanel modelId={modelId} runId={runId} />
    </Box>
  );
}

/** Load and show a run's model card (the page, and the run page's Model card tab). */
export function ModelCardPanel({ modelId, runId, reloadKey }: { modelId: string; runId: string; reloadKey?: unknown }) {
  const query = useQuery(getModelCardDocumentOptions({ path: { model_id: modelId, run_id: runId } }));
  useRefetchOn(query, [reloadKey]); // the run moved on (decided, deployed)
  const card = loaded(query);
  if (card.error) return <ErrorAlert error={card.error} title="The model card cannot be shown" />;
  if (!card.data) return <Loading what="the model card" />;
  // The document's parts are read as modelCard.ts describes them.
  return <ModelCardDocumentView card={card.data.modelCard as unknown as ModelCardDocument} />;
}

function Part({ title, children, testId }: { title: string; children: ReactNode; testId: string }) {
  return (
    <Box as="section" mb={6} data-testid={testId}>
      <Heading as="h2" size="lg" mb={2} borderBottomWidth="1px" pb={1}>
        {title}
      </Heading>
      {children}
    </Box>
  );
}

function Facts({ rows }: { rows: [string, ReactNode][] }) {
  return (
    <Box as="dl" fontSize="sm">
      {rows.map(([label, value]) => (
        <Flex key={label} gap={3} mb={1}>
          <Text as="dt" color="fg.muted" minW="48" flexShrink={0}>
            {label}
          </Text>
          <Box as="dd">{value}</Box>
        </Flex>
      ))}
    </Box>
  );
}

function trainerText(lin: ModelCardDocument["lineage"]): string {
  if (!lin.trainerPython && !lin.trainerLibraries?.length) return NOT_RECORDED;
  const parts = [lin.trainerPython ? `Python ${lin.trainerPython}` : "Python not recorded"];
  if (lin.trainerLibraries?.length) parts.push(lin.trainerLibraries.join(", "));
  const who = lin.trainerReportedBy === "trainer" ? " (reported by the trainer)" : lin.trainerReportedBy === "host" ? " (the local backend's interpreter)" : "";
  return parts.join("; ") + who;
}

function Bullets({ items, empty }: { items: string[]; empty: string }) {
  if (items.length === 0) return <Text fontSize="sm" color="fg.muted">{empty}</Text>;
  return (
    <List.Root fontSize="sm" ps={5}>
      {items.map((item, i) => (
        <List.Item key={i}>{item}</List.Item>
      ))}
    </List.Root>
  );
}

function SimpleTable({ head, rows, testId }: { head: string[]; rows: ReactNode[][]; testId?: string }) {
  return (
    <Box overflowX="auto" borderWidth="1px" borderRadius="md" mb={3}>
      <Table.Root size="sm" data-testid={testId}>
        <Table.Header>
          <Table.Row>
            {head.map((h) => (
              <Table.ColumnHeader key={h}>{h}</Table.ColumnHeader>
            ))}
          </Table.Row>
        </Table.Header>
        <Table.Body>
          {rows.map((row, i) => (
            <Table.Row key={i}>
              {row.map((cell, j) => (
                <Table.Cell key={j}>{cell}</Table.Cell>
              ))}
            </Table.Row>
          ))}
        </Table.Body>
      </Table.Root>
    </Box>
  );
}

function MetricTable({ metrics, compared, testId }: { metrics: CardMetric[]; compared: boolean; testId: string }) {
  if (!compared) {
    return (
      <SimpleTable
        testId={testId}
        head={["Metric", "Value [95 % interval]"]}
        rows={metrics.map((m) => [m.title, formatEstimate(m.challenger)])}
      />
    );
  }
  return (
    <SimpleTable
      testId={testId}
      head={["Metric", "Challenger [95 % interval]", "Champion [95 % interval]", "Difference [95 % interval]", "Verdict"]}
      rows={metrics.map((m) => [
        m.title,
        formatEstimate(m.challenger),
        formatEstimate(m.champion),
        formatEstimate(m.difference, true),
        m.verdict ? (
          <Badge colorPalette={VERDICTS[m.verdict].palette} variant="subtle">
            {VERDICTS[m.verdict].text}
          </Badge>
        ) : (
          "—"
        ),
      ])}
    />
  );
}

export function ModelCardDocumentView({ card }: { card: ModelCardDocument }) {
  const { run, intendedUse: use, provenance: prov, population: pop, performance: perf } = card;
  const gallery = card.failureGallery;
  const cal = card.calibration;
  const lin = card.lineage;
  return (
    <Box className="model-card" maxW="5xl" data-testid="model-card">
      <style>{PRINT_CSS}</style>
      <Flex justify="space-between" align="start" gap={3} wrap="wrap" mb={2}>
        <Heading as="h1" size="2xl">
          {card.title}
        </Heading>
        <Flex gap={2} data-print="hide">
          <Button asChild size="sm" variant="outline">
            <a href={markdownUrl(card.model.id, run.id)} download data-testid="download-markdown">
              Download Markdown
            </a>
          </Button>
          <Button size="sm" variant="outline" onClick={() => window.print()}>
            Print
          </Button>
        </Flex>
      </Flex>
      <Text fontSize="sm" color="fg.muted" mb={5} data-testid="card-byline">
        Model {card.model.name} (config revision {card.model.revision}) · run {run.slug} ({run.id}) · {run.status} ·
        triggered by {run.triggeredBy} · started {shownTime(run.started)}
        {run.ended ? ` · ended ${shownTime(run.ended)}` : " · not ended"} · card generated {shownTime(card.generatedAt)}
      </Text>

      <Part title="Intended use" testId="card-intended-use">
        <Text mb={2}>{use.summary}</Text>
        {!use.declared && (
          <Text fontSize="sm" color="fg.warning" mb={2}>
            The model config declares no intended use (modelCard); shown: its description.
          </Text>
        )}
        <Heading as="h3" size="sm" mt={2}>
          Intended users
        </Heading>
        <Bullets items={use.intendedUsers} empty={NOT_RECORDED} />
        <Heading as="h3" size="sm" mt={2}>
          Out of scope
        </Heading>
        <Bullets items={use.outOfScope} empty={NOT_RECORDED} />
      </Part>

      <Part title="Data provenance" testId="card-provenance">
        <Facts
          rows={[
            ["Problem", `${card.problem.title}; labels ${card.problem.labels.map((l) => `${l.name} (${l.index})`).join(", ")}`],
            ["Dataset", prov.datasetName],
            ["FHIR source", prov.fhirSource.name],
            ["Inclusion codes", prov.inclusionCodes.length ? prov.inclusionCodes.map((c) => <Code key={c} me={1}>{c}</Code>) : NOT_RECORDED],
            ["Snapshot", prov.snapshotId ? <Code fontSize="xs">{prov.snapshotId}</Code> : NOT_RECORDED],
            ["Curated", shownTime(prov.snapshotCreated)],
            ...(prov.recordsRead !== undefined ? [["FHIR records read", String(prov.recordsRead)] as [string, ReactNode]] : []),
            ...(prov.quarantined !== undefined ? [["Left out by curation", String(prov.quarantined)] as [string, ReactNode]] : []),
            ...(prov.nearDuplicateGroups !== undefined
              ? [["Near-duplicate groups", `${prov.nearDuplicateGroups} (each kept in one split)`] as [string, ReactNode]]
              : []),
          ]}
        />
        {prov.splits.length > 0 ? (
          <SimpleTable
            testId="card-splits"
            head={["Split", "Images", "Patients", "Independent clusters"]}
            rows={prov.splits.map((s) => [s.split, s.images, s.patients ?? NOT_RECORDED, s.clusters ?? NOT_RECORDED])}
          />
        ) : (
          <Empty>Counts per split: not recorded.</Empty>
        )}
      </Part>

      <Part title="Population" testId="card-population">
        {pop.prevalence.length > 0 ? (
          <SimpleTable
            head={["Split", "Label", "Images", "Share"]}
            rows={pop.prevalence.map((p) => [p.split, p.label, p.images, formatShare(p.share)])}
          />
        ) : (
          <Empty>Label prevalence per split: not recorded.</Empty>
        )}
        <Text fontSize="sm" mb={2} data-testid="card-subgroups-note">
          {pop.note}
        </Text>
        {pop.subgroups.map((g) => (
          <Box key={g.name} mb={3} data-testid={`card-subgroup-${g.name}`}>
            <Heading as="h3" size="sm" mb={1}>
              Subgroup {g.name}
              {g.images !== undefined ? ` · ${g.images} images` : ""}
              {g.clusters !== undefined ? ` · ${g.clusters} clusters` : ""}{" "}
              {g.small && (
                <Badge colorPalette="orange" variant="subtle">
                  small: read with care
                </Badge>
              )}
            </Heading>
            {g.prevalence.length > 0 && (
              <Text fontSize="sm" color="fg.muted" mb={1}>
                Prevalence: {g.prevalence.map((p) => `${p.label} ${formatShare(p.share)}`).join(", ")}
              </Text>
            )}
            <MetricTable metrics={g.metrics} compared testId={`card-subgroup-metrics-${g.name}`} />
          </Box>
        ))}
      </Part>

      <Part title="Performance on the held-out test set" testId="card-performance">
        {!perf.evaluated ? (
          <Empty>Not evaluated yet.</Empty>
        ) : (
          <>
            {perf.note && <Text mb={2}>{perf.note}</Text>}
            <Text fontSize="sm" mb={1}>
              Test set: {perf.testImages ?? NOT_RECORDED} images
              {perf.testClusters !== undefined ? ` · ${perf.testClusters} independent clusters` : ""}
              {perf.testImagesLeftOut ? ` · ${perf.testImagesLeftOut} left out (a copy is in train)` : ""}.
            </Text>
            {perf.intervals && (
              <Text fontSize="sm" color="fg.muted" mb={1}>
                Intervals: {perf.intervals}.
              </Text>
            )}
            {perf.championRun && (
              <Text fontSize="sm" mb={1}>
                Compared with the champion, run {perf.championRun}, on the same test images
                {perf.labelsChanged ? " (the label set changed since)" : ""}.
              </Text>
            )}
            {perf.operatingPoint && (
              <Text fontSize="sm" mb={2} data-testid="card-operating-point">
                Operating point: {perf.operatingPoint.description}.
              </Text>
            )}
            <MetricTable metrics={perf.metrics} compared={Boolean(perf.championRun)} testId="card-metrics" />
          </>
        )}
      </Part>

      <Part title="Failure gallery" testId="card-failures">
        {gallery.classes.length === 0 ? (
          <Empty>{gallery.note}</Empty>
        ) : (
          <>
            <Text fontSize="sm" mb={2}>
              {gallery.note}
            </Text>
            {gallery.classes.map((c) => (
              <Box key={c.label} mb={3}>
                <Heading as="h3" size="sm" mb={1}>
                  True label {c.label}
                  {c.errors !== undefined && c.images !== undefined
                    ? ` · ${c.errors} of ${c.images} test images answered wrongly`
                    : ""}
                </Heading>
                {c.cases.length === 0 && <Empty>No case of this label kept.</Empty>}
                <Flex gap={3} wrap="wrap">
                  {c.cases.map((x) => (
                    <Box key={x.exampleId} borderWidth="1px" borderRadius="md" p={2} fontSize="sm" maxW="48">
                      {x.maps[0] && (
                        <img src={pictureUrl(x.maps[0].url)} alt={`${x.maps[0].name} of ${x.exampleId}`} width={160} />
                      )}
                      <Code fontSize="xs">{x.exampleId}</Code>
                      <Text>
                        {x.trueLabel} → {x.predictedLabel}
                        {x.confidence !== undefined ? ` (${x.confidence.toFixed(2)})` : ""}
                      </Text>
                      {x.maps.map((m) => (
                        <Link key={m.name} href={pictureUrl(m.url)} color="fg.info" me={2} target="_blank" rel="noreferrer">
                          {m.name}
                        </Link>
                      ))}
                      {x.mapsError && (
                        <Text fontSize="xs" color="fg.muted">
                          No maps: {x.mapsError}
                        </Text>
                      )}
                    </Box>
                  ))}
                </Flex>
              </Box>
            ))}
          </>
        )}
      </Part>

      <Part title="Calibration" testId="card-calibration">
        <Text fontSize="sm" mb={2}>
          {cal.note}
        </Text>
        {cal.recorded && (
          <Facts
            rows={[
              ["ECE, challenger", formatEstimate(cal.challengerError)],
              ...(cal.championError ? [["ECE, champion", formatEstimate(cal.championError)] as [string, ReactNode]] : []),
            ]}
          />
        )}
        {cal.bins.length > 0 && (
          <SimpleTable
            head={["Mean confidence", "Accuracy", "Images"]}
            rows={cal.bins.map((b) => [b.confidence.toFixed(3), b.accuracy.toFixed(3), b.count])}
          />
        )}
      </Part>

      <Part title="Limitations and known failure modes" testId="card-limitations">
        {card.limitations.length === 0 ? (
          <Empty>No limitation declared or derived.</Empty>
        ) : (
          <List.Root fontSize="sm" ps={5}>
            {card.limitations.map((l, i) => (
              <List.Item key={i}>
                {l.text}{" "}
                {l.source === "derived" && (
                  <Text as="span" color="fg.muted" fontStyle="italic">
                    (derived from this run)
                  </Text>
                )}
              </List.Item>
            ))}
          </List.Root>
        )}
      </Part>

      <Part title="Lineage" testId="card-lineage">
        {(lin.tagMoves ?? []).map((text) => (
          <Text key={text} fontSize="sm" color="fg.warning" fontWeight="semibold" mb={2} data-testid="card-tag-moved">
            Image tag moved: {text}
          </Text>
        ))}
        <Facts
          rows={[
            ["Snapshot", lin.snapshotId ? <Code fontSize="xs">{lin.snapshotId}</Code> : NOT_RECORDED],
            ["Test set sha256", lin.testSetSha256 ? <Code fontSize="xs">{lin.testSetSha256}</Code> : NOT_RECORDED],
            ["Training image", <Code fontSize="xs">{lin.trainingImage}</Code>],
            [
              "Training image digest",
              lin.trainingImageDigest ? (
                <>
                  <Code fontSize="xs">{lin.trainingImageDigest}</Code>
                  {lin.trainingBackend ? ` (${lin.trainingBackend})` : ""}
                </>
              ) : (
                NOT_RECORDED
              ),
            ],
            ...(lin.trainingRepoDigests?.length
              ? [["Repository digests", lin.trainingRepoDigests.join(", ")] as [string, ReactNode]]
              : []),
            ...(lin.trainingResolvedImage
              ? [["SageMaker resolved image", <Code fontSize="xs">{lin.trainingResolvedImage}</Code>] as [string, ReactNode]]
              : []),
            ["Inference image", <Code fontSize="xs">{lin.inferenceImage}</Code>],
            ["Inference image digest", lin.inferenceImageDigest ? <Code fontSize="xs">{lin.inferenceImageDigest}</Code> : NOT_RECORDED],
            ["Model artifact sha256", lin.modelArtifactSha256 ? <Code fontSize="xs">{lin.modelArtifactSha256}</Code> : NOT_RECORDED],
            ["Objective", lin.objective],
            [
              "Hyperparameters",
              (lin.hyperparameters.map((h) => `${h.name} = ${h.value}`).join(", ") || NOT_RECORDED) +
                (lin.bestTrial !== undefined ? ` (trial ${lin.bestTrial})` : ""),
            ],
            ["Tuning sampler", lin.sampler ?? NOT_RECORDED],
            ["Trainer", trainerText(lin)],
            ["Package version", lin.packageVersion + (lin.packageVersionRecorded === false ? " (current; the run recorded none)" : "")],
            ["Source commit", lin.sourceCommit ? lin.sourceCommit + (lin.sourceDirty ? " (with uncommitted changes)" : "") : NOT_RECORDED],
          ]}
        />
      </Part>

      <Part title="Decisions" testId="card-decisions">
        <Text fontSize="sm" mb={2}>
          Approval status: <StatusBadge status={card.approval.status} /> (approvals required: {card.approval.minApprovers})
        </Text>
        {card.approval.decisions.length === 0 ? (
          <Empty>No decision yet.</Empty>
        ) : (
          card.approval.decisions.map((d, i) => (
            <Box key={i} mb={2} fontSize="sm" data-testid="card-decision">
              <Text>
                {shownTime(d.at)} — <StatusBadge status={d.decision} /> by {d.by}: {d.justification}
                {[d.partial, d.rollback ? "rollback" : undefined, d.channel ? `via ${d.channel}` : undefined]
                  .filter(Boolean)
                  .map((x) => ` (${x})`)
                  .join("")}
              </Text>
              {d.override && (
                <Box ps={4} color="fg.warning" data-testid="card-override">
                  <Text>Override: {d.override}</Text>
                  <Bullets items={d.overrideReasons} empty="" />
                </Box>
              )}
            </Box>
          ))
        )}
        <Text fontSize="sm" mt={3}>
          {card.deployment.type === "edge" ? "Edge" : "Cloud"} deployment: {card.deployment.status}
          {card.deployment.error ? ` (${card.deployment.error})` : ""}
          {card.deployment.isChampion ? "; this run is the current champion." : "."}
        </Text>
      </Part>
    </Box>
  );
}
