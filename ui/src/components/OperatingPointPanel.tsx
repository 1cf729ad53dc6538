import { Box, Table, Text } from "@chakra-ui/react";

import type { OperatingPoint, Run } from "../api";
import {
  describeDelta,
  describeOperatingPoint,
  explainAtPoint,
  formatDelta,
  formatInterval,
  formatNumber,
  metricTitle,
  operatingPointRows,
} from "../format";
import { Empty } from "./common";

function Decision({ who, point }: { who: string; point?: OperatingPoint }) {
  if (!point) return null;
  const { decision, chosen } = describeOperatingPoint(point);
  return (
    <Box mb={2} data-testid={`operating-point-${who}`}>
      <Text fontSize="sm">
        <Text as="span" fontWeight="semibold">
          {who === "challenger" ? "This run decides: " : "The champion decides (its own stored threshold): "}
        </Text>
        {decision}
      </Text>
      {chosen && (
        <Text fontSize="xs" color="fg.muted">
          {chosen}
        </Text>
      )}
      {point.note && point.threshold !== undefined && (
        <Text fontSize="xs" color="fg.warning">
          {point.note}
        </Text>
      )}
    </Box>
  );
}

function Cell({ value, range, signed = false }: { value?: number; range?: [number, number]; signed?: boolean }) {
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

/** The operating point of challenger and champion (threshold, how it was chosen) and the
 * measures at it: sensitivity, specificity, PPV and NPV, each with its 95 % cluster interval,
 * and the paired difference. */
export function OperatingPointPanel({ run }: { run: Run }) {
  const points = run.evaluation?.operatingPoints ?? {};
  const rows = operatingPointRows(run);
  if (!points.challenger && rows.length === 0) {
    return <Empty>{run.evaluation ? "This model has no operating point (segmentation)." : "No evaluation yet."}</Empty>;
  }
  return (
    <Box data-testid="operating-point">
      <Decision who="challenger" point={points.challenger} />
      <Decision who="champion" point={points.champion} />
      {rows.length > 0 && (
        <Box overflowX="auto" borderWidth="1px" borderRadius="md" mt={2}>
          <Table.Root size="sm" data-testid="operating-point-table">
            <Table.Header>
              <Table.Row>
                <Table.ColumnHeader>At the operating point</Table.ColumnHeader>
                <Table.ColumnHeader textAlign="end">Challenger (this run)</Table.ColumnHeader>
                <Table.ColumnHeader textAlign="end">Champion</Table.ColumnHeader>
                <Table.ColumnHeader textAlign="end">Difference (challenger − champion)</Table.ColumnHeader>
              </Table.Row>
            </Table.Header>
            <Table.Body>
              {rows.map((r) => {
                const verdict = describeDelta(r);
                return (
                  <Table.Row key={r.name} data-testid={`at-point-${r.name}`}>
                    <Table.Cell>
                      <Text fontSize="sm">{metricTitle(r.name)}</Text>
                      <Text fontSize="xs" color="fg.muted">
                        {explainAtPoint(r.family, r.label)}
                      </Text>
                    </Table.Cell>
                    <Table.Cell textAlign="end">
                      <Cell value={r.challenger} range={r.challengerInterval} />
                    </Table.Cell>
                    <Table.Cell textAlign="end">
                      <Cell value={r.champion} range={r.championInterval} />
                    </Table.Cell>
                    <Table.Cell
                      textAlign="end"
                      color={r.better === undefined ? undefined : r.better ? "fg.success" : "fg.error"}
                    >
                      <Cell value={r.delta} range={r.deltaInterval} signed />
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
