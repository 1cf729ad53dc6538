import {
  Box,
  Button,
  Code,
  Flex,
  Heading,
  HStack,
  Input,
  Link,
  SimpleGrid,
  Table,
  Tabs,
  Text,
} from "@chakra-ui/react";
import { useEffect, useState } from "react";

import { useQuery } from "@tanstack/react-query";

import { api, API_BASE, type LogEvent, type Model, type Permissions, type Run } from "../api";
import { getTrialsOptions } from "../client/@tanstack/react-query.gen";
import { AirflowDagLink } from "../components/AirflowDagLink";
import { ApprovalForm } from "../components/ApprovalForm";
import { RunDeployActions } from "../components/DeployActions";
import { ReliabilityChart, TrialsChart } from "../components/charts.lazy";
import { ConfusionMatrixView } from "../components/ConfusionMatrix";
import { FailureGallery } from "../components/FailureGallery";
import { GatePanel } from "../components/GatePanel";
import { MetricComparisonTable } from "../components/MetricComparison";
import { OperatingPointPanel } from "../components/OperatingPointPanel";
import { ProvenancePanel } from "../components/ProvenancePanel";
import { SubgroupTable } from "../components/SubgroupTable";
import { Empty, ErrorAlert, Loading, Section, StatusBadge } from "../components/common";
import { describeActor, formatDuration, formatNumber, formatParam, formatTime, runStage, type View } from "../format";
import { ModelCardPanel } from "./ModelCardPage";
import { loaded as asLoaded, useModelWithPermissions, useRefetchOn, useRun, useRunRef } from "../queries";

type RunView = Extract<View, { kind: "run" }>;

/** Whether the page should look again soon (the pipeline is still moving). */
function moving(run: Run, championId?: string | null): boolean {
  if (run.status === "running" || run.deployStatus === "deploying") return true;
  const last = run.approvals[run.approvals.length - 1];
  // Approved and not deployed yet: the pipeline's deploy task is about to run.
  return (
    last?.decision === "approved" &&
    last.criteria?.approvals?.complete !== false && // a partial approval (two-person rule) waits
    championId !== run.id &&
    !run.deployStatus &&
    !last.criteria?.rollback
  );
}

export function RunPage({ view, go }: { view: RunView; go: (view: View) => void }) {
  const ref = useRunRef(view);
  const [live, setLive] = useState(false);
  // While the pipeline moves the run, the run and its model are asked again every 3 s.
  const every = live ? 3000 : false;
  const bundle = useModelWithPermissions(ref.data?.modelId, { refetchInterval: every });
  const runQuery = useRun(ref.data?.modelId, ref.data?.runId, every);
  const run = runQuery.data;
  const nowLive = !!(run && bundle.data && moving(run, bundle.data.model.championId));
  useEffect(() => setLive(nowLive), [nowLive]);
  const failed = ref.error ?? bundle.error ?? runQuery.error;
  if (failed) return <ErrorAlert error={failed} title="This run cannot be shown" />;
  if (!run || !bundle.data) return <Loading what="the run" />;
  const { model, permissions } = bundle.data;
  const reload = () => undefined; // a decision or deployment invalidated the model's queries
  const isChampion = model.championId === run.id;
  return (
    <Box>
      <Flex align="baseline" gap={3} wrap="wrap" mb={1}>
        <Link
          href={`?view=model&modelId=${model.id}`}
          color="fg.info"
          onClick={(e) => {
            e.preventDefault();
            go({ kind: "model", modelId: model.id });
          }}
        >
          {model.name}
        </Link>
        <Text color="fg.muted">/</Text>
        <Heading as="h1" size="xl" data-testid="run-title">
          Run {run.slug}
        </Heading>
        <Box as="span" title={runStage(run).detail} data-testid="run-stage">
          <StatusBadge status={runStage(run).status} />
        </Box>
        {isChampion && (
          <Text as="span" fontWeight="semibold" color="fg.success" data-testid="champion-badge">
            ★ Champion
          </Text>
        )}
      </Flex>
      <Text color="fg.muted" fontSize="sm" mb={4}>
        {run.id}
        {" · "}
        <Link
          href={`?view=modelCard&modelId=${model.id}&runId=${run.id}`}
          color="fg.info"
          data-testid="model-card-link"
          onClick={(e) => {
            e.preventDefault();
            go({ kind: "modelCard", modelId: model.id, runId: run.id });
          }}
        >
          Model card (printable)
        </Link>
        {run.airflow?.dagId && run.airflow?.runId && (
          <>
            {" · "}
            <AirflowDagLink dagId={run.airflow.dagId} dagRunId={run.airflow.runId}>
              Airflow DAG run {run.airflow.runId}
            </AirflowDagLink>
          </>
        )}
      </Text>
      <Tabs.Root defaultValue={view.tab ?? "overview"} variant="line" lazyMount>
        <Tabs.List mb={4}>
          <Tabs.Trigger value="overview">Overview</Tabs.Trigger>
          <Tabs.Trigger value="trials">Trials</Tabs.Trigger>
          <Tabs.Trigger value="evaluation">Evaluation</Tabs.Trigger>
          <Tabs.Trigger value="card">Model card</Tabs.Trigger>
          <Tabs.Trigger value="logs">Logs</Tabs.Trigger>
        </Tabs.List>
        <Tabs.Content value="overview">
          <Overview run={run} model={model} permissions={permissions} onDecided={reload} />
        </Tabs.Content>
        <Tabs.Content value="trials">
          <Trials run={run} />
        </Tabs.Content>
        <Tabs.Content value="evaluation">
          <Evaluation run={run} />
        </Tabs.Content>
        <Tabs.Content value="card">
          <ModelCardPanel modelId={run.modelId} runId={run.id} reloadKey={`${run.approvals.length}/${run.deployStatus}`} />
        </Tabs.Content>
        <Tabs.Content value="logs">
          <Logs run={run} />
        </Tabs.Content>
      </Tabs.Root>
    </Box>
  );
}

function Fact({ label, children }: { label: string; children: React.ReactNode }) {
  return (
    <Box>
      <Text fontSize="xs" color="fg.muted" textTransform="uppercase" letterSpacing="wide">
        {label}
      </Text>
      <Box fontSize="sm">{children}</Box>
    </Box>
  );
}

function Overview({
  run,
  model,
  permissions,
  onDecided,
}: {
  run: Run;
  model: Model;
  permissions: Permissions;
  onDecided: () => void;
}) {
  const last = run.approvals[run.approvals.length - 1];
  // A settled decision is listed above the form's place: no second notice saying so (issue 31:
  // an orange "No decision possible here" on decided runs, the decision printed twice).
  const settled = Boolean(last) && !(last.decision === "approved" && last.criteria?.approvals?.complete === false);
  return (
    <Box>
      <SimpleGrid columns={{ base: 2, md: 4 }} gap={4} mb={6}>
        <Fact label="Started">{formatTime(run.start)}</Fact>
        <Fact label="Ended">{formatTime(run.end)}</Fact>
        <Fact label="Duration">{formatDuration(run.start, run.end)}</Fact>
        <Fact label="Triggered by">
          <Text as="span" title={run.triggeredBy}>
            {describeActor(run.triggeredBy).name}
          </Text>
        </Fact>
        <Fact label="Snapshot">
          <Code fontSize="xs">{run.snapshotId ? run.snapshotId.slice(0, 16) : "—"}</Code>
        </Fact>
        <Fact label="Approval">
          <StatusBadge status={run.approvalStatus} />
        </Fact>
        <Fact label="Deployment">
          <StatusBadge status={run.deployStatus ?? undefined} />
        </Fact>
        <Fact label="Artifact">
          {run.modelArtifactUri ? (
            <Link
              href={`${API_BASE}/models/${run.modelId}/runs/${run.id}/model-artifact/download`}
              color="fg.info"
              download
            >
              Download model.tar.gz
            </Link>
          ) : (
            "—"
          )}
        </Fact>
      </SimpleGrid>
      {run.error && <ErrorAlert error={new Error(run.error)} title="The run failed" />}
      {run.deployError && <ErrorAlert error={new Error(run.deployError)} title="Deployment failed" />}
      <Section title="Challenger vs champion (same test set)">
        <MetricComparisonTable run={run} />
      </Section>
      {run.problemDefinition?.problemType !== "imgSeg" && (
        <Section title="Operating point (the decision threshold)">
          <OperatingPointPanel run={run} />
        </Section>
      )}
      <Section title="Change-control gate">
        <GatePanel gate={run.gate ?? undefined} />
      </Section>
      <Section title="Subgroups (sex, age band, site, device)">
        <SubgroupTable run={run} />
      </Section>
      {run.hyperparameters && run.hyperparameters.length > 0 && (
        <Section title="Best trial's hyperparameters">
          <HStack gap={4} wrap="wrap">
            {run.hyperparameters.map((h) => (
              <Text key={h.name} fontSize="sm">
                <Code>{h.name}</Code> = {formatParam(h.value)}
              </Text>
            ))}
          </HStack>
        </Section>
      )}
      <Section title="Provenance (what trained and served this run)">
        <ProvenancePanel provenance={run.provenance ?? undefined} />
      </Section>
      <Section title="Decision and deployment">
        {run.approvals.length > 0 && (
          <Box mb={3} data-testid="decisions">
            {run.approvals.map((a, i) => (
              <Text key={i} fontSize="sm">
                <StatusBadge status={a.decision} /> by {a.user ?? a.actor} on {formatTime(a.timestamp)}
                {a.criteria?.rollback ? " (rollback)" : ""}
                {a.criteria?.approvals && !a.criteria.approvals.complete
                  ? ` (approval ${a.criteria.approvals.approvedBy.length} of ${a.criteria.approvals.required})`
                  : ""}
                : {a.description ?? ""}
                {a.criteria?.override && (
                  <Text as="span" color="fg.warning" data-testid="decision-override">
                    {" "}
                    — override: {a.criteria.override.justification}
                  </Text>
                )}
              </Text>
            ))}
          </Box>
        )}
        {!last && run.approvalDeadline && (
          <Text fontSize="sm" color="fg.muted" mb={2}>
            Waiting for a decision until {formatTime(run.approvalDeadline)}.
          </Text>
        )}
        {!settled && (
          <ApprovalForm
            run={run}
            championId={model.championId}
            mayDecide={permissions.mayDecide}
            decideReason={permissions.decideReason}
            approvers={permissions.approvers}
            user={permissions.user}
            onDecided={onDecided}
          />
        )}
        <RunDeployActions run={run} model={model} onDone={onDecided} />
      </Section>
    </Box>
  );
}

function Trials({ run }: { run: Run }) {
  const query = useQuery(getTrialsOptions({ path: { model_id: run.modelId, run_id: run.id } }));
  useRefetchOn(query, [run.status]); // a running run's trials grow
  const trials = asLoaded(query);
  if (trials.error) return <ErrorAlert error={trials.error} />;
  if (!trials.data) return <Loading what="trials" />;
  const rows = trials.data.trials;
  if (rows.length === 0) return <Empty>No trials yet.</Empty>;
  const names = [...new Set(rows.flatMap((t) => Object.keys(t.params ?? {})))];
  return (
    <Box>
      <Section title="Objective over trials">
        <TrialsChart
          trials={rows}
          minimize={run.trainingApproach?.objective?.direction === "minimize"}
          objective={run.trainingApproach?.objective?.metric ?? "objective"}
        />
      </Section>
      <Box overflowX="auto" borderWidth="1px" borderRadius="md">
        <Table.Root size="sm" data-testid="trials-table">
          <Table.Header>
            <Table.Row>
              <Table.ColumnHeader>#</Table.ColumnHeader>
              <Table.ColumnHeader>State</Table.ColumnHeader>
              <Table.ColumnHeader textAlign="end">Objective</Table.ColumnHeader>
              {names.map((n) => (
                <Table.ColumnHeader key={n}>{n}</Table.ColumnHeader>
              ))}
              <Table.ColumnHeader>Duration</Table.ColumnHeader>
              <Table.ColumnHeader>Failure</Table.ColumnHeader>
            </Table.Row>
          </Table.Header>
          <Table.Body>
            {rows.map((t) => (
              <Table.Row key={t.number}>
                <Table.Cell>{t.number}</Table.Cell>
                <Table.Cell>
                  <StatusBadge status={t.state} />
                </Table.Cell>
                <Table.Cell textAlign="end">{formatNumber(t.value, 4)}</Table.Cell>
                {names.map((n) => (
                  <Table.Cell key={n}>{formatParam(t.params?.[n])}</Table.Cell>
                ))}
                <Table.Cell>{formatDuration(t.start, t.end)}</Table.Cell>
                <Table.Cell maxW="sm" whiteSpace="pre-wrap" fontSize="xs" color="fg.error">
                  {t.failure ?? ""}
                </Table.Cell>
              </Table.Row>
            ))}
          </Table.Body>
        </Table.Root>
      </Box>
    </Box>
  );
}

function Evaluation({ run }: { run: Run }) {
  const matrices = run.evaluation?.confusionMatrix ?? {};
  const names = new Map((run.problemDefinition?.labelDefinition?.labels ?? []).map((l) => [l.index, l.name]));
  const reliability = run.evaluation?.reliability ?? {};
  if (!run.evaluation) return <Empty>No evaluation yet.</Empty>;
  return (
    <Box>
      {/* Side by side where the window is wide (issue 31: at 1920 px the matrices and the chart
          each sat alone in a row, with large empty gaps); one under the other on narrow ones. */}
      <Flex gap={8} wrap="wrap" align="flex-start" mb={6} data-testid="evaluation-top">
        <Box flex="0 1 auto" minW={0} data-testid="confusion-matrices">
          <Heading as="h3" size="md" mb={2}>
            Confusion matrices
          </Heading>
          <Text fontSize="xs" color="fg.muted" mb={2}>
            Rows: true label; columns: predicted.
          </Text>
          {Object.keys(matrices).length === 0 ? (
            <Empty>This problem type has no confusion matrix.</Empty>
          ) : (
            <Flex gap={6} wrap="wrap">
              {Object.entries(matrices).map(([subject, matrix]) => (
                <ConfusionMatrixView
                  key={subject}
                  title={subject}
                  matrix={{ ...matrix, labels: matrix.labels.map((l) => names.get(Number(l)) ?? l) }}
                />
              ))}
            </Flex>
          )}
        </Box>
        <Box flex="1 1 440px" maxW="720px" minW={0} data-testid="reliability">
          <Heading as="h3" size="md" mb={2}>
            Reliability (calibration)
          </Heading>
          {Object.keys(reliability).length === 0 ? (
            <Empty>No reliability data for this run (runs evaluated before it was recorded have none).</Empty>
          ) : (
            <ReliabilityChart bins={reliability} />
          )}
        </Box>
      </Flex>
      <Section title="Failure cases (the most confident errors, with saliency maps)">
        <FailureGallery run={run} />
      </Section>
    </Box>
  );
}

function Logs({ run }: { run: Run }) {
  const [filter, setFilter] = useState("");
  const [applied, setApplied] = useState("");
  const [events, setEvents] = useState<LogEvent[]>([]);
  const [marker, setMarker] = useState<string | undefined>();
  const [error, setError] = useState<Error | null>(null);
  const [loading, setLoading] = useState(false);
  const load = async (pattern: string, from?: string) => {
    setLoading(true);
    setError(null);
    try {
      const page = await api<{ events: LogEvent[]; marker?: string }>(
        `/models/${run.modelId}/runs/${run.id}/logs`,
        { query: { filter: pattern, marker: from, limit: 200 } },
      );
      setEvents((old) => (from ? [...old, ...page.events] : page.events));
      setMarker(page.marker);
    } catch (e) {
      setError(e as Error);
    } finally {
      setLoading(false);
    }
  };
  useEffect(() => {
    void load(applied);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [run.id, applied]);
  return (
    <Box>
      <Flex
        as="form"
        gap={2}
        mb={3}
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(filter);
        }}
      >
        <Input
          size="sm"
          maxW="md"
          value={filter}
          onChange={(e) => setFilter(e.target.value)}
          placeholder='Filter: words, "a phrase", ?any ?of, -exclude'
          aria-label="Log filter"
        />
        <Button size="sm" type="submit" variant="outline">
          Filter
        </Button>
      </Flex>
      {error && <ErrorAlert error={error} />}
      <Box
        as="pre"
        fontFamily="mono"
        fontSize="xs"
        borderWidth="1px"
        borderRadius="md"
        p={3}
        maxH="60vh"
        overflow="auto"
        whiteSpace="pre-wrap"
        data-testid="log-events"
      >
        {events.length === 0 && !loading
          ? "No log events" + (applied ? " match the filter." : " yet.")
          : events.map((e) => `${formatTime(e.timestamp)} [${e.stage}] ${e.payload}`).join("\n")}
      </Box>
      {marker && (
        <Button mt={2} size="sm" variant="outline" loading={loading} onClick={() => load(applied, marker)}>
          Load more
        </Button>
      )}
    </Box>
  );
}
