import { Badge, Box, Code, Table, Text } from "@chakra-ui/react";
import { useQuery } from "@tanstack/react-query";

import type { Model } from "../api";
import { listScoringBatchesOptions } from "../client/@tanstack/react-query.gen";
import type { ScoringBatchView } from "../client/types.gen";
import { AirflowDagLink } from "../components/AirflowDagLink";
import { Empty, ErrorAlert, Loading } from "../components/common";
import { formatTime, plural } from "../format";
import { loaded as asLoaded } from "../queries";

const PALETTE: Record<string, string> = { running: "blue", succeeded: "green", failed: "red" };

function selectionText(batch: ScoringBatchView): string {
  const { split, since, writeBack } = batch.selection;
  const which = split === "all" || !split ? "all splits" : split === "unassigned" ? "patients in no split yet" : `${split} split`;
  return `${which}${since ? `, changed since ${formatTime(Date.parse(since))}` : ""}${writeBack === false ? ", not written back" : ""}`;
}

const count = (n: number) => n.toLocaleString("en");

/** The model's batch scorings with their progress (GET /models/{id}/scoring-batches). */
export function ScoringTab({ model }: { model: Model }) {
  const loaded = asLoaded(useQuery({
    ...listScoringBatchesOptions({ path: { model_id: model.id } }),
    // a running batch moves: look again every 10 s while one is running
    refetchInterval: (q) => (q.state.data?.batches.some((b) => b.status === "running") ? 10_000 : false),
  }));
  if (loaded.error) return <ErrorAlert error={loaded.error} title="The batch scorings cannot be shown" />;
  if (!loaded.data) return <Loading what="batch scorings" />;
  const { batches, scoringDagId } = loaded.data;
  const dagLink = <AirflowDagLink dagId={scoringDagId}>{scoringDagId}</AirflowDagLink>;
  return (
    <Box data-testid="scoring">
      <Text fontSize="sm" color="fg.muted" mb={3}>
        {model.championId
          ? "Scores the dataset's examples with the deployed champion and writes each prediction back to the FHIR source as a preliminary Observation. Trigger "
          : "Once a champion is deployed to the cloud, Airflow gets a scoring DAG: "}
        {dagLink}
        {model.championId ? (
          <>
            {" "}in Airflow with its params (split, since, chunkSize, writeBack), or run{" "}
            <Code fontSize="xs">airflow dags trigger {scoringDagId}</Code>.
          </>
        ) : (
          "."
        )}
      </Text>
      {batches.length === 0 ? (
        <Empty>No batch has been scored yet.</Empty>
      ) : (
        <Box overflowX="auto" borderWidth="1px" borderRadius="md">
          <Table.Root size="sm" data-testid="scoring-table">
            <Table.Header>
              <Table.Row>
                <Table.ColumnHeader>Started</Table.ColumnHeader>
                <Table.ColumnHeader>Status</Table.ColumnHeader>
                <Table.ColumnHeader>Examples</Table.ColumnHeader>
                <Table.ColumnHeader>Progress</Table.ColumnHeader>
                <Table.ColumnHeader>Written to</Table.ColumnHeader>
                <Table.ColumnHeader>Champion run</Table.ColumnHeader>
              </Table.Row>
            </Table.Header>
            <Table.Body>
              {batches.map((b) => (
                <Table.Row key={b.id} data-testid="scoring-row">
                  <Table.Cell fontSize="xs" whiteSpace="nowrap">
                    {formatTime(b.createdAt)}
                    <Text color="fg.muted">{b.dagRunId}</Text>
                  </Table.Cell>
                  <Table.Cell>
                    <Badge variant="subtle" colorPalette={PALETTE[b.status] ?? "gray"}>
                      {b.status}
                    </Badge>
                  </Table.Cell>
                  <Table.Cell fontSize="xs" whiteSpace="nowrap" data-testid="scoring-examples">
                    {plural(b.total, "example")}
                    <Text color="fg.muted">{selectionText(b)}</Text>
                  </Table.Cell>
                  <Table.Cell fontSize="xs" whiteSpace="nowrap" data-testid="scoring-progress">
                    {count(b.chunksDone)} of {plural(b.chunks, "chunk")} done
                    <Text color="fg.muted">
                      {count(b.scored)} scored, {count(b.written)} written{b.skipped ? `, ${count(b.skipped)} skipped` : ""}
                    </Text>
                  </Table.Cell>
                  <Table.Cell fontSize="xs" wordBreak="break-all" minW="16rem">
                    {b.writtenTo ?? "—"}
                  </Table.Cell>
                  <Table.Cell fontSize="xs">
                    <Code fontSize="xs">{b.runId.slice(0, 8)}</Code>
                  </Table.Cell>
                </Table.Row>
              ))}
            </Table.Body>
          </Table.Root>
        </Box>
      )}
    </Box>
  );
}
