import { Alert, Badge, Box, Button, Checkbox, Code, Flex, Heading, HStack, Link, NativeSelect, SimpleGrid, Table, Tabs, Text } from "@chakra-ui/react";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useMemo, useState } from "react";

import type { Deployment, Model, NextRun, Permissions } from "../api";
import { getCurationReportOptions, getDeploymentsOptions, getMonitoringOptions } from "../client/@tanstack/react-query.gen";
import { AirflowDagLink } from "../components/AirflowDagLink";
import type { SeriesPoint } from "../components/charts";
import { MetricsChart } from "../components/charts.lazy";
import { Empty, ErrorAlert, type Loaded, Loading, Section, StatusBadge } from "../components/common";
import { ConfigForm } from "../components/ConfigForm";
import { ConfirmDeploy } from "../components/DeployActions";
import { NearDuplicates, type NearDuplicateReport } from "../components/NearDuplicates";
import { UpstreamSelection, type UpstreamReport } from "../components/UpstreamSelection";
import { rollbackRows } from "../deploy";
import {
  compareMetrics,
  describeActor,
  formatDelta,
  formatInterval,
  formatNumber,
  formatParam,
  formatTime,
  metricTitle,
  plural,
  runStage,
  type View,
} from "../format";
import { defaultMetric, defaultSeries, metricSeries, objectiveOf } from "../metrics";
import { invalidateDataset, invalidateModel, loaded as asLoaded, runsOptions, useDataset, useModelId, useModelWithPermissions, useRuns, useStartRun } from "../queries";
import { ExamplesTab } from "./ExamplesTab";
import { ScoringTab } from "./ScoringTab";
import { Pager } from "./ModelsPage";

type ModelView = Extract<View, { kind: "model" }>;

const RUNS_PAGE = 25;


const MODEL_TABS = [
  ["runs", "Runs"],
  ["metrics", "Metrics"],
  ["curation", "Curation report"],
  ["deployments", "Deployments"],
  ["monitoring", "Monitoring"],
  ["scoring", "Batch scoring"],
  ["config", "Configuration"],
  ["dataset", "Dataset"],
  ["examples", "Examples"],
] as const;

export function ModelPage({ view, go }: { view: ModelView; go: (view: View) => void }) {
  if (view.tab === "new-model" || view.tab === "new-dataset") {
    return <ConfigForm kind={view.tab === "new-model" ? "model" : "dataset"} go={go} />;
  }
  return <ExistingModel view={view} go={go} />;
}

function ExistingModel({ view, go }: { view: ModelView; go: (view: View) => void }) {
  const modelId = useModelId(view.modelId, view.dagId);
  const loaded = useModelWithPermissions(modelId.data);
  const client = useQueryClient();
  // The Runs tab's first page, asked for with the model (the tab shows first).
  useQuery({ ...runsOptions(modelId.data ?? "", { limit: RUNS_PAGE, offset: 0 }), enabled: !!modelId.data });
  const starting = useStartRun(modelId.data ?? "");
  const failed = modelId.error ?? loaded.error;
  if (failed) return <ErrorAlert error={failed} title="This model cannot be shown" />;
  if (!loaded.data) return <Loading what="the model" />;
  const { model, permissions } = loaded.data;
  const start = () =>
    starting.mutate(
      { path: { model_id: model.id }, body: {} },
      { onSuccess: (created) => go({ kind: "run", modelId: model.id, runId: created.runId }) },
    );
  const reloadModel = () => void invalidateModel(client, model.id);
  return (
    <Box>
      <Flex align="baseline" gap={3} wrap="wrap" mb={1}>
        <Link
          href="?view=models"
          color="fg.info"
          onClick={(e) => {
            e.preventDefault();
            go({ kind: "models" });
          }}
        >
          Models
        </Link>
        <Text color="fg.muted">/</Text>
        <Heading as="h1" size="xl" data-testid="model-title">
          {model.name}
        </Heading>
        <Badge colorPalette={model.championId ? "green" : "gray"} variant="subtle">
          {model.championId ? "Deployed" : "Not deployed"}
        </Badge>
        <Box flex="1" />
        <Button
          size="sm"
          colorPalette="blue"
          loading={starting.isPending}
          disabled={!permissions.mayStartRun}
          title={permissions.mayStartRun ? undefined : `${permissions.user} may not start runs of ${model.dagId}`}
          onClick={start}
        >
          Start run
        </Button>
      </Flex>
      <Text color="fg.muted" mb={1}>
        {model.description || "No description."}
      </Text>
      <Text fontSize="sm" color="fg.muted" mb={4}>
        DAG{" "}
        <AirflowDagLink dagId={model.dagId}>{model.dagId}</AirflowDagLink>
        {!permissions.mayStartRun && ` · ${permissions.user} may not start runs`}
      </Text>
      {starting.error && <ErrorAlert error={starting.error as unknown as Error} title="No run was started" />}
      <Tabs.Root defaultValue={view.tab ?? "runs"} variant="line" lazyMount>
        {/* each tab's name on one line; the row scrolls sideways where the frame is narrow */}
        <Tabs.List mb={4} overflowX="auto" data-testid="model-tabs">
          {MODEL_TABS.map(([value, label]) => (
            <Tabs.Trigger key={value} value={value} whiteSpace="nowrap" flexShrink={0}>
              {label}
            </Tabs.Trigger>
          ))}
        </Tabs.List>
        <Tabs.Content value="runs">
          <Runs model={model} go={go} />
        </Tabs.Content>
        <Tabs.Content value="metrics">
          <Metrics model={model} />
        </Tabs.Content>
        <Tabs.Content value="curation">
          <Curation datasetId={model.datasetId} />
        </Tabs.Content>
        <Tabs.Content value="deployments">
          <Deployments model={model} permissions={permissions} go={go} />
        </Tabs.Content>
        <Tabs.Content value="monitoring">
          <Monitoring model={model} />
        </Tabs.Content>
        <Tabs.Content value="scoring">
          <ScoringTab model={model} />
        </Tabs.Content>
        <Tabs.Content value="config">
          <ConfigForm kind="model" stored={model} readOnly={!permissions.mayEdit} go={go} onSaved={reloadModel} />
        </Tabs.Content>
        <Tabs.Content value="dataset">
          <DatasetConfig datasetId={model.datasetId} mayEdit={permissions.mayEdit} go={go} />
        </Tabs.Content>
        <Tabs.Content value="examples">
          <ExamplesTab model={model} permissions={permissions} />
        </Tabs.Content>
      </Tabs.Root>
    </Box>
  );
}

function DatasetConfig({ datasetId, mayEdit, go }: { datasetId: string; mayEdit: boolean; go: (view: View) => void }) {
  const loaded = asLoaded(useDataset(datasetId));
  const client = useQueryClient();
  if (loaded.error) return <ErrorAlert error={loaded.error} />;
  if (!loaded.data) return <Loading what="the dataset" />;
  return (
    <ConfigForm
      kind="dataset"
      stored={loaded.data.dataset}
      readOnly={!mayEdit}
      go={go}
      onSaved={() => void invalidateDataset(client, datasetId)}
    />
  );
}

function Runs({ model, go }: { model: Model; go: (view: View) => void }) {
  const [offset, setOffset] = useState(0);
  const [limit, setLimit] = useState(RUNS_PAGE);
  const page = useRuns(model.id, { limit, offset });
  if (page.error) return <ErrorAlert error={page.error} />;
  if (!page.data) return <Loading what="runs" />;
  const runs = page.data.runs;
  return (
    <Box>
      {runs.length === 0 ? (
        <Empty>No runs yet. Start one, or wait for the schedule.</Empty>
      ) : (
        <Box overflowX="auto" borderWidth="1px" borderRadius="md">
          <Table.Root size="sm" interactive data-testid="runs-table">
            <Table.Header>
              <Table.Row>
                <Table.ColumnHeader>Run</Table.ColumnHeader>
                <Table.ColumnHeader>Status</Table.ColumnHeader>
                <Table.ColumnHeader>Started / ended</Table.ColumnHeader>
                <Table.ColumnHeader>Triggered by</Table.ColumnHeader>
                <Table.ColumnHeader>Snapshot</Table.ColumnHeader>
                <Table.ColumnHeader>Best hyperparameters</Table.ColumnHeader>
                <Table.ColumnHeader>Challenger vs champion</Table.ColumnHeader>
                <Table.ColumnHeader>Decision</Table.ColumnHeader>
              </Table.Row>
            </Table.Header>
            <Table.Body>
              {runs.map((r) => {
                const headline = compareMetrics(r).slice(0, 2);
                return (
                  <Table.Row key={r.id} data-testid="run-row">
                    <Table.Cell whiteSpace="nowrap" data-testid="run-name">
                      <Link
                        href={`?view=run&modelId=${model.id}&runId=${r.id}`}
                        color="fg.info"
                        fontWeight="semibold"
                        onClick={(e) => {
                          e.preventDefault();
                          go({ kind: "run", modelId: model.id, runId: r.id });
                        }}
                      >
                        {r.slug}
                      </Link>
                      {model.championId === r.id && (
                        <Text fontSize="xs" color="fg.success">
                          ★ champion
                        </Text>
                      )}
                    </Table.Cell>
                    <Table.Cell whiteSpace="nowrap" title={runStage(r).detail}>
                      <StatusBadge status={runStage(r).status} />
                    </Table.Cell>
                    <Table.Cell fontSize="xs" whiteSpace="nowrap" data-testid="run-times">
                      {formatTime(r.start)}
                      <br />
                      {formatTime(r.end)}
                    </Table.Cell>
                    <Table.Cell whiteSpace="nowrap" title={r.triggeredBy} data-testid="triggered-by">
                      {describeActor(r.triggeredBy).name}
                    </Table.Cell>
                    <Table.Cell>
                      <Code fontSize="xs">{r.snapshotId ? r.snapshotId.slice(0, 10) : "—"}</Code>
                    </Table.Cell>
                    <Table.Cell fontSize="xs">
                      {(r.hyperparameters ?? []).map((h) => `${h.name}=${formatParam(h.value)}`).join(", ") || "—"}
                    </Table.Cell>
                    {/* The metric's name and its numbers each on one line: at 1280 px the column
                        was ~76 px wide and "Balanced accuracy 0.500 vs — (—)" took 4 (issue 31). */}
                    <Table.Cell fontSize="xs" data-testid="run-comparison">
                      {headline.length === 0
                        ? "—"
                        : headline.map((m) => (
                            <Text key={m.name} color={m.better === undefined ? undefined : m.better ? "fg.success" : "fg.error"}>
                              <Text as="span" whiteSpace="nowrap">
                                {metricTitle(m.name)}
                              </Text>{" "}
                              <Text as="span" whiteSpace="nowrap">
                                {formatNumber(m.challenger)} vs {formatNumber(m.champion)} ({formatDelta(m.delta)}
                                {m.deltaInterval ? ` ${formatInterval(m.deltaInterval, true)}` : ""})
                              </Text>
                            </Text>
                          ))}
                    </Table.Cell>
                    <Table.Cell>
                      <StatusBadge status={r.approvalStatus} />
                    </Table.Cell>
                  </Table.Row>
                );
              })}
            </Table.Body>
          </Table.Root>
        </Box>
      )}
      <Pager total={page.data.totalEntries} limit={limit} offset={offset} setOffset={setOffset} setLimit={setLimit} />
    </Box>
  );
}

function Metrics({ model }: { model: Model }) {
  const runs = useRuns(model.id, { limit: 200, order: "desc" });
  const all = useMemo(() => (runs.data ? metricSeries(runs.data.runs) : null), [runs.data]);
  const [chosen, setChosen] = useState<string[] | null>(null);
  const [metric, setMetric] = useState<string | null>(null);
  if (runs.error) return <ErrorAlert error={runs.error} />;
  if (!all) return <Loading what="metrics" />;
  if (all.metrics.length === 0) return <Empty>No evaluated runs yet.</Empty>;
  const current = metric ?? defaultMetric(all.metrics, model.trainingApproach) ?? all.metrics[0];
  const objective = objectiveOf(model.trainingApproach);
  const available = all.seriesOf(current);
  const selected = (chosen ?? defaultSeries(available)).filter((s) => available.includes(s));
  return (
    <Box>
      <Flex gap={4} mb={3} wrap="wrap" align="center">
        <NativeSelect.Root size="sm" width="auto">
          <NativeSelect.Field aria-label="Metric" value={current} onChange={(e) => { setMetric(e.target.value); setChosen(null); }}>
            {all.metrics.map((m) => (
              <option key={m} value={m}>
                {metricTitle(m)}
                {m === defaultMetric(all.metrics, model.trainingApproach) && objective ? " (objective)" : ""}
              </option>
            ))}
          </NativeSelect.Field>
          <NativeSelect.Indicator />
        </NativeSelect.Root>
        <HStack gap={3} wrap="wrap" role="group" aria-label="Series">
          {available.map((s) => (
            <Checkbox.Root
              key={s}
              size="sm"
              checked={selected.includes(s)}
              onCheckedChange={(e) =>
                setChosen(e.checked ? [...selected, s] : selected.filter((x) => x !== s))
              }
            >
              <Checkbox.HiddenInput />
              <Checkbox.Control />
              <Checkbox.Label>{s}</Checkbox.Label>
            </Checkbox.Root>
          ))}
        </HStack>
      </Flex>
      <MetricsChart data={all.points(current) as SeriesPoint[]} series={selected} metric={metricTitle(current)} />
      <Text fontSize="xs" color="fg.muted" mt={2}>
        {objective ? `The model is tuned for ${objective.metric} (${objective.direction ?? "maximize"}). ` : ""}
        Oldest run on the left. Challenger: the run's own model; champion: the model it was compared with on the same test set; per label: "challenger/&lt;label&gt;".
      </Text>
    </Box>
  );
}

type Counts = Record<string, number>;

interface CurationReportBody {
  snapshotId: string;
  createdAt?: number;
  exampleCount: number;
  report: {
    examples?: { total?: number; bySplit?: Counts; byLabel?: Record<string, Counts>; byLabelStatus?: Record<string, Counts> };
    patients?: Counts;
    quarantined?: { total?: number; byReason?: Record<string, { count: number; meaning?: string }> };
    nearDuplicates?: NearDuplicateReport;
    identicalImages?: { groups?: number; groupsSpanningPatients?: number };
    upstream?: UpstreamReport;
  };
}

/** Rows: splits; columns: the keys found in any split (label names, label statuses). */
function SplitTable({ title, bySplit, patients }: { title: string; bySplit?: Record<string, Counts>; patients?: Counts }) {
  const splits = Object.keys(bySplit ?? {});
  const columns = [...new Set(splits.flatMap((s) => Object.keys(bySplit![s])))];
  return (
    <Box>
      <Heading as="h4" size="sm" mb={1}>
        {title}
      </Heading>
      {splits.length === 0 ? (
        <Empty>None.</Empty>
      ) : (
        <Table.Root size="sm" variant="outline">
          <Table.Header>
            <Table.Row>
              <Table.ColumnHeader>Split</Table.ColumnHeader>
              {columns.map((c) => (
                <Table.ColumnHeader key={c} textAlign="end">
                  {c}
                </Table.ColumnHeader>
              ))}
              {patients && <Table.ColumnHeader textAlign="end">patients</Table.ColumnHeader>}
            </Table.Row>
          </Table.Header>
          <Table.Body>
            {splits.map((s) => (
              <Table.Row key={s}>
                <Table.Cell>{s}</Table.Cell>
                {columns.map((c) => (
                  <Table.Cell key={c} textAlign="end">
                    {bySplit![s][c] ?? 0}
                  </Table.Cell>
                ))}
                {patients && <Table.Cell textAlign="end">{patients[s] ?? 0}</Table.Cell>}
              </Table.Row>
            ))}
          </Table.Body>
        </Table.Root>
      )}
    </Box>
  );
}

function Curation({ datasetId }: { datasetId: string }) {
  const query = useQuery(getCurationReportOptions({ path: { dataset_id: datasetId } }));
  // The report's body is typed loosely by the API (a dict); read as this page knows it.
  const loaded = asLoaded(query) as unknown as Loaded<{ curationReport: CurationReportBody | null }>;
  if (loaded.error) return <ErrorAlert error={loaded.error} />;
  if (!loaded.data) return <Loading what="the curation report" />;
  const body = loaded.data.curationReport;
  if (!body) return <Empty>The dataset has not been curated yet; its first run curates it.</Empty>;
  const report = body.report;
  const examples = report.examples ?? {};
  const reasons = Object.entries(report.quarantined?.byReason ?? {});
  const near = report.nearDuplicates;
  return (
    <Box data-testid="curation-report">
      <Text fontSize="sm" color="fg.muted" mb={3}>
        Snapshot <Code fontSize="xs">{body.snapshotId.slice(0, 16)}</Code> · {body.exampleCount} examples ·{" "}
        {formatTime(body.createdAt)} · identical images: {plural(report.identicalImages?.groups ?? 0, "group")} (
        {report.identicalImages?.groupsSpanningPatients ?? 0} spanning patients)
      </Text>
      {report.upstream && (
        <Section title="Chosen by another model's predictions">
          <UpstreamSelection upstream={report.upstream} />
        </Section>
      )}
      <SimpleGrid columns={{ base: 1, lg: 2 }} gap={6} mb={6}>
        <SplitTable title="Examples per split and label status" bySplit={examples.byLabelStatus} patients={report.patients} />
        <SplitTable title="Confirmed labels per split" bySplit={examples.byLabel} />
      </SimpleGrid>
      <Section title={`Quarantined (${report.quarantined?.total ?? 0})`}>
        {reasons.length === 0 ? (
          <Empty>Nothing was quarantined.</Empty>
        ) : (
          <Table.Root size="sm" variant="outline" data-testid="quarantine-reasons">
            <Table.Header>
              <Table.Row>
                <Table.ColumnHeader>Reason</Table.ColumnHeader>
                <Table.ColumnHeader textAlign="end">Count</Table.ColumnHeader>
                <Table.ColumnHeader>Meaning</Table.ColumnHeader>
              </Table.Row>
            </Table.Header>
            <Table.Body>
              {reasons.map(([reason, r]) => (
                <Table.Row key={reason}>
                  <Table.Cell>
                    <Code fontSize="xs">{reason}</Code>
                  </Table.Cell>
                  <Table.Cell textAlign="end">{r.count}</Table.Cell>
                  <Table.Cell fontSize="xs">{r.meaning ?? ""}</Table.Cell>
                </Table.Row>
              ))}
            </Table.Body>
          </Table.Root>
        )}
      </Section>
      <Section title="Near-duplicates">
        <NearDuplicates near={near} datasetId={datasetId} exampleCount={body.exampleCount} />
      </Section>
    </Box>
  );
}

function Deployments({
  model,
  permissions,
  go,
}: {
  model: Model;
  permissions: Permissions;
  go: (view: View) => void;
}) {
  const loaded = asLoaded(useQuery(getDeploymentsOptions({ path: { model_id: model.id } })));
  const [target, setTarget] = useState<Deployment | null>(null);
  if (loaded.error) return <ErrorAlert error={loaded.error} />;
  if (!loaded.data) return <Loading what="deployments" />;
  const rows = loaded.data.deployments;
  if (rows.length === 0) return <Empty>Never deployed: approve an evaluated run.</Empty>;
  const offered = rollbackRows(rows, model.championId);
  return (
    <Box>
      <Text fontSize="sm" color="fg.muted" mb={3}>
        Newest first. <b>Roll back</b> restores an earlier champion: it is approved again with your justification
        (recorded as a rollback) and deployed at once.
        {!permissions.mayDecide && ` ${permissions.decideReason ?? "You may not deploy runs of this model."}`}
      </Text>
      <ConfirmDeploy
        action={target ? "rollback" : null}
        modelId={model.id}
        modelName={model.name}
        runId={target?.runId ?? ""}
        runSlug={target?.runSlug ?? ""}
        deployType={(model.deployApproach as { type?: string }).type}
        onClose={() => setTarget(null)}
        onDone={() => undefined /* the rollback invalidated the model's queries */}
      />
      <Box overflowX="auto" borderWidth="1px" borderRadius="md">
        <Table.Root size="sm" data-testid="deployments-table">
          <Table.Header>
            <Table.Row>
              <Table.ColumnHeader>When</Table.ColumnHeader>
              <Table.ColumnHeader>Run</Table.ColumnHeader>
              <Table.ColumnHeader>Action</Table.ColumnHeader>
              <Table.ColumnHeader>Type</Table.ColumnHeader>
              <Table.ColumnHeader>By</Table.ColumnHeader>
              <Table.ColumnHeader>Reason</Table.ColumnHeader>
              <Table.ColumnHeader />
            </Table.Row>
          </Table.Header>
          <Table.Body>
            {rows.map((d) => (
              <Table.Row key={d.id}>
                <Table.Cell fontSize="xs" whiteSpace="nowrap">
                  {formatTime(d.timestamp)}
                </Table.Cell>
                <Table.Cell whiteSpace="nowrap">{d.runSlug}</Table.Cell>
                <Table.Cell>
                  <Badge variant="subtle" colorPalette={d.action === "rollback" ? "orange" : "blue"}>
                    {d.action}
                  </Badge>
                  {d.isCurrent && (
                    <Text as="span" ml={2} fontSize="xs" color="fg.success">
                      ★ current
                    </Text>
                  )}
                </Table.Cell>
                <Table.Cell>{d.deployType}</Table.Cell>
                <Table.Cell fontSize="xs" whiteSpace="nowrap" title={d.actor} data-testid="deployed-by">
                  <DeployedBy deployment={d} />
                </Table.Cell>
                <Table.Cell fontSize="xs" minW="48">
                  {d.reason ?? ""}
                </Table.Cell>
                <Table.Cell>
                  <HStack gap={2}>
                    <Button size="xs" variant="outline" onClick={() => go({ kind: "run", modelId: model.id, runId: d.runId })}>
                      Open run
                    </Button>
                    {offered.has(d) && (
                      <Button
                        size="xs"
                        variant="outline"
                        colorPalette="orange"
                        disabled={!permissions.mayDecide}
                        title={permissions.mayDecide ? undefined : (permissions.decideReason ?? undefined)}
                        onClick={() => setTarget(d)}
                      >
                        Roll back…
                      </Button>
                    )}
                  </HStack>
                </Table.Cell>
              </Table.Row>
            ))}
          </Table.Body>
        </Table.Root>
      </Box>
    </Box>
  );
}

/** Who a deployment was for: the approver(s), and what carried it out when that was not them. */
function DeployedBy({ deployment }: { deployment: Deployment }) {
  const actor = describeActor(deployment.actor);
  const approvers = deployment.approvedBy ?? [];
  if (approvers.length === 0) return <>{actor.name}</>;
  const same = actor.person && approvers.includes(actor.name);
  return (
    <>
      <Text as="span">approved by {approvers.join(" and ")}</Text>
      {!same && (
        <Text as="span" display="block" color="fg.muted">
          deployed by {actor.name}
        </Text>
      )}
    </>
  );
}

interface LivePerformance {
  metric: string;
  labelled: number;
  value?: number;
  ci95?: [number, number];
  championTest?: number;
  championTestCi95?: [number, number];
  championTestClusters?: number;
  resampled?: string;
  note?: string;
  skipped?: string;
}

interface FeatureDrift {
  pValue?: number;
  drifted?: boolean;
  largestShifts?: Record<string, number>;
  skipped?: string;
}

interface EstimatedPerformance {
  metric?: string;
  balancedAccuracy?: { value: number; low: number; high: number };
  accuracy?: { value: number; low: number; high: number };
  floor?: number;
  breached?: boolean;
  skipped?: string;
}

/** One site's or device's window of a monitor check (`details.subgroups.groups`). */
interface SubgroupWindow {
  attribute: string;
  value: string;
  predictions: number;
  reference?: "subgroup" | "overall";
  breaches?: string[];
  skipped?: string;
}

interface SubgroupChecks {
  attributes?: string[];
  tested?: number;
  levelDivisor?: number;
  groups?: SubgroupWindow[];
  skipped?: string;
}

interface MonitoringEvent {
  id: number;
  runId?: string;
  status: "ok" | "breach" | "insufficient" | "no-reference";
  breaches: string[];
  window: { predictions: number; from?: number; to?: number };
  details?: {
    livePerformance?: LivePerformance;
    featureDrift?: FeatureDrift;
    estimatedPerformance?: EstimatedPerformance;
    subgroups?: SubgroupChecks;
  };
  createdAt: number;
}

/** "site=East (12): featureDrift.images · 1 other window clean · 1 too small" */
function subgroupWindows(checks?: SubgroupChecks): string {
  if (!checks) return "—";
  const groups = checks.groups ?? [];
  if (groups.length === 0) return checks.skipped ?? "—";
  const drifted = groups.filter((g) => (g.breaches ?? []).length > 0);
  const clean = groups.filter((g) => !g.skipped && (g.breaches ?? []).length === 0);
  const small = groups.filter((g) => g.skipped);
  const parts = drifted.map(
    (g) =>
      `${g.attribute}=${g.value} (${g.predictions}): ${(g.breaches ?? []).map((b) => b.slice(`subgroup.${g.attribute}=${g.value}.`.length)).join(", ")}`,
  );
  if (clean.length) parts.push(`${clean.length} ${drifted.length ? "other " : ""}window${clean.length === 1 ? "" : "s"} clean`);
  if (small.length) parts.push(`${small.length} too small`);
  return parts.join(" · ");
}

/** "drifted (p 0.002): grad1 −3.1 sd, noiseMad +2.0 sd" or "same (p 0.410)" */
function featureDrift(drift?: FeatureDrift): string {
  if (!drift) return "—";
  if (drift.skipped || drift.pValue === undefined) return drift.skipped ?? "—";
  const shifts = Object.entries(drift.largestShifts ?? {})
    .map(([name, z]) => `${name} ${z > 0 ? "+" : "−"}${Math.abs(z).toFixed(1)} sd`)
    .join(", ");
  return drift.drifted ? `drifted (p ${drift.pValue.toFixed(3)}): ${shifts}` : `same (p ${drift.pValue.toFixed(3)})`;
}

/** "Balanced accuracy ≈ 0.870 [0.800, 0.930] · floor 0.850" (from the model's probabilities) */
function estimatedPerformance(found?: EstimatedPerformance): string {
  if (!found) return "—";
  const metric = (found.metric ?? "balancedAccuracy") as "balancedAccuracy" | "accuracy";
  const value = found[metric];
  if (found.skipped || !value) return found.skipped ?? "—";
  const floor = found.floor === undefined ? "" : ` · floor ${formatNumber(found.floor)}`;
  return `${metricTitle(metric)} ≈ ${formatNumber(value.value)} ${formatInterval([value.low, value.high])}${floor}`;
}

/** "Balanced accuracy 0.840 [0.780, 0.900] on 42 labelled · champion's test 0.910 [0.880, 0.940]" */
function livePerformance(live?: LivePerformance): string {
  if (!live) return "—";
  if (live.value === undefined || live.skipped) return live.skipped ?? "—";
  const champion =
    live.championTest === undefined
      ? ""
      : ` · champion's test ${formatNumber(live.championTest)}${live.championTestCi95 ? ` ${formatInterval(live.championTestCi95)}` : ""}`;
  return `${metricTitle(live.metric)} ${formatNumber(live.value)}${live.ci95 ? ` ${formatInterval(live.ci95)}` : ""} on ${live.labelled} labelled${champion}`;
}

interface MonitoringAnswer {
  championId?: string;
  /** What Airflow does with the monitor DAG (as the Models table's next run). */
  monitorDag?: NextRun & { dagId: string };
  monitoring: { enabled?: boolean; schedule?: string; retrainOnBreach?: boolean };
  reference?: { runId: string; examples: number; clusters?: number | null; createdAt: number } | null;
  events: MonitoringEvent[];
}

const MONITORING_PALETTE: Record<MonitoringEvent["status"], string> = {
  ok: "green",
  breach: "red",
  insufficient: "gray",
  "no-reference": "gray",
};

/** The monitor DAG's checks of the deployed champion (GET /models/{id}/monitoring). */
function Monitoring({ model }: { model: Model }) {
  const loaded = asLoaded(useQuery(getMonitoringOptions({ path: { model_id: model.id } }))) as unknown as Loaded<MonitoringAnswer>;
  if (loaded.error) return <ErrorAlert error={loaded.error} />;
  if (!loaded.data) return <Loading what="monitoring checks" />;
  const { monitoring, reference, events, monitorDag } = loaded.data;
  const state = monitoring.enabled === false ? "off" : monitorDag?.state;
  const breach = monitoring.retrainOnBreach ? "starts retraining (through evaluation and approval)" : "is recorded and audited";
  const schedule = monitorDag?.schedule ?? monitoring.schedule ?? "@hourly";
  const settings =
    state === "off"
      ? "Monitoring is switched off in the model config."
      : state === "scheduled"
        ? `Checked ${schedule} (next ${formatTime(monitorDag?.at)}); a breach ${breach}.`
        : state === "paused" || state === "notInAirflow" || state === "ended"
          ? `Planned ${schedule}; a breach ${breach}.`
          : `Checked ${schedule}; a breach ${breach}.`;
  return (
    <Box data-testid="monitoring">
      {monitorDag && (state === "paused" || state === "notInAirflow" || state === "ended") && (
        <Alert.Root status="warning" mb={3} data-testid="monitor-dag-state">
          <Alert.Indicator />
          <Alert.Content>
            <Alert.Title>
              {state === "paused"
                ? "No checks run: the monitor DAG is paused in Airflow."
                : state === "ended"
                  ? "No checks run: the monitor DAG's schedule has no further run."
                  : "No checks run: Airflow has not loaded the monitor DAG."}
            </Alert.Title>
            <Alert.Description fontSize="sm">
              {state === "paused" ? (
                <>
                  To start the checks, open{" "}
                  <AirflowDagLink dagId={monitorDag.dagId}>{monitorDag.dagId}</AirflowDagLink>{" "}
                  in Airflow and switch its pause toggle on (next to the DAG's name), or run{" "}
                  <Code fontSize="xs">airflow dags unpause {monitorDag.dagId}</Code>.
                </>
              ) : state === "ended" ? (
                <>Change the model config's monitoring.schedule.</>
              ) : (
                <>
                  Check Airflow's DAG import errors for <Code fontSize="xs">{monitorDag.dagId}</Code>.
                </>
              )}
            </Alert.Description>
          </Alert.Content>
        </Alert.Root>
      )}
      <Text fontSize="sm" color="fg.muted" mb={3}>
        {settings}{" "}
        {reference
          ? `Reference profile: ${reference.clusters ? `images of ${reference.clusters} independent clusters of the champion's snapshot, outputs of its ` : ""}${reference.examples} test examples, made ${formatTime(reference.createdAt)}.`
          : "No reference profile yet: it is made when a run is deployed to the cloud."}
      </Text>
      {events.length === 0 ? (
        <Empty>
          No monitoring check has run yet
          {state === "scheduled" && monitorDag?.at ? `; the first is due ${formatTime(monitorDag.at)}` : ""}
          {state === "paused" ? " (the monitor DAG is paused)" : ""}.
        </Empty>
      ) : (
        <Box overflowX="auto" borderWidth="1px" borderRadius="md">
          <Table.Root size="sm" data-testid="monitoring-table">
            <Table.Header>
              <Table.Row>
                <Table.ColumnHeader>When</Table.ColumnHeader>
                <Table.ColumnHeader>Status</Table.ColumnHeader>
                <Table.ColumnHeader>Breaches</Table.ColumnHeader>
                <Table.ColumnHeader>Predictions</Table.ColumnHeader>
                <Table.ColumnHeader>Feature drift</Table.ColumnHeader>
                <Table.ColumnHeader>Estimated performance (no labels)</Table.ColumnHeader>
                <Table.ColumnHeader>Live performance</Table.ColumnHeader>
                <Table.ColumnHeader>Per site and device</Table.ColumnHeader>
              </Table.Row>
            </Table.Header>
            <Table.Body>
              {events.map((e) => (
                <Table.Row key={e.id}>
                  <Table.Cell fontSize="xs">{formatTime(e.createdAt)}</Table.Cell>
                  <Table.Cell>
                    <Badge variant="subtle" colorPalette={MONITORING_PALETTE[e.status]}>
                      {e.status}
                    </Badge>
                  </Table.Cell>
                  <Table.Cell fontSize="xs">{e.breaches.join(", ") || "—"}</Table.Cell>
                  <Table.Cell>{e.window.predictions}</Table.Cell>
                  <Table.Cell fontSize="xs" data-testid="feature-drift">
                    {featureDrift(e.details?.featureDrift)}
                  </Table.Cell>
                  <Table.Cell fontSize="xs" data-testid="estimated-performance">
                    {estimatedPerformance(e.details?.estimatedPerformance)}
                  </Table.Cell>
                  <Table.Cell fontSize="xs" data-testid="live-performance">
                    {livePerformance(e.details?.livePerformance)}
                  </Table.Cell>
                  <Table.Cell fontSize="xs" data-testid="subgroup-windows">
                    {subgroupWindows(e.details?.subgroups)}
                  </Table.Cell>
                </Table.Row>
              ))}
            </Table.Body>
          </Table.Root>
        </Box>
      )}
      {events.some((e) => e.details?.livePerformance?.ci95) && (
        <Text fontSize="xs" color="fg.muted" mt={2} data-testid="live-interval-note">
          Live intervals resample predictions, not patients: the prediction log keeps no patient ids (by design), so images of one
          patient cannot be grouped and a live interval may be too narrow. The champion's test interval resamples independent clusters
          (patients, or groups of copies of one image).
        </Text>
      )}
    </Box>
  );
}
