import { Box, Table, Text } from "@chakra-ui/react";

import type { Run } from "../api";
import {
  atPointOf,
  compareMetrics,
  describeDelta,
  describeResampling,
  describeTestSet,
  formatDelta,
  formatInterval,
  formatNumber,
  metricTitle,
} from "../format";
import { Empty } from "./common";

function Value({ value, range, signed = false }: { value?: number; range?: [number, number]; signed?: boolean }) {
  if (value === undefined) return <>—</>;
  return (
    <>
      {signed ? formatDelta(value) : formatNumber(value)}
      {range && (
        <Text as="span" color="fg.muted" fontSize="xs" ms={1} whiteSpace="nowrap">
          {formatInterval(range, signed)}
        </Text>
      )}
    </>
  );
}

/** Challenger vs champion on the same test set: each metric with its interval, the paired
 * difference with its interval, and how many images and independent clusters were scored. */
export function MetricComparisonTable({ run }: { run: Run }) {
  const rows = compareMetrics(run).filter((r) => !atPointOf(r.name)); // those: OperatingPointPanel
  const evaluation = run.evaluation;
  const testSet = describeTestSet(evaluation);
  const leftOut = evaluation?.testExamplesLeftOut ?? 0;
  return (
    <Box>
      {testSet && (
        <Text fontSize="sm" mb={1} data-testid="test-set-size">
          {testSet}
          {evaluation?.testSetSha256 ? (
            <Text as="span" color="fg.muted">{` · test set ${evaluation.testSetSha256.slice(0, 12)}`}</Text>
          ) : null}
          {evaluation?.note ? <Text as="span" color="fg.muted">{` — ${evaluation.note}`}</Text> : null}
        </Text>
      )}
      {leftOut > 0 && (
        <Text fontSize="sm" color="fg.warning" mb={1} data-testid="left-out">
          {leftOut} test image{leftOut === 1 ? "" : "s"} left out: a copy is in train.
        </Text>
      )}
      {describeResampling(evaluation) && (
        <Text fontSize="xs" color="fg.muted" mb={2} data-testid="resampling">
          {describeResampling(evaluation)}
        </Text>
      )}
      {rows.length === 0 ? (
        <Empty>No evaluation yet.</Empty>
      ) : (
        <Box overflowX="auto" borderWidth="1px" borderRadius="md">
          <Table.Root size="sm" data-testid="comparison-table">
            <Table.Header>
              <Table.Row>
                <Table.ColumnHeader>Metric</Table.ColumnHeader>
                <Table.ColumnHeader textAlign="end">Challenger (this run)</Table.ColumnHeader>
                <Table.ColumnHeader textAlign="end">Champion</Table.ColumnHeader>
                <Table.ColumnHeader textAlign="end">Difference (challenger − champion)</Table.ColumnHeader>
              </Table.Row>
            </Table.Header>
            <Table.Body>
              {rows.map((r) => {
                const verdict = describeDelta(r);
                return (
                  <Table.Row key={r.name} data-testid={`metric-${r.name}`}>
                    <Table.Cell title={r.description ? `${r.name}: ${r.description}` : r.name}>{metricTitle(r.name)}</Table.Cell>
                    <Table.Cell textAlign="end">
                      <Value value={r.challenger} range={r.challengerInterval} />
                    </Table.Cell>
                    <Table.Cell textAlign="end">
                      <Value value={r.champion} range={r.championInterval} />
                    </Table.Cell>
                    <Table.Cell
                      textAlign="end"
                      color={r.better === undefined ? undefined : r.better ? "fg.success" : "fg.error"}
                    >
                      <Value value={r.delta} range={r.deltaInterval} signed />
                      {verdict ? ` ${verdict}` : ""}
                    </Table.Cell>
                  </Table.Row>
                );
              })}
            </Table.Body>
          </Table.Root>
        </Box>
      )}
    </Box>
  );
}
