import { Alert, Badge, Box, Table, Text } from "@chakra-ui/react";

import type { Gate } from "../api";
import { formatDelta, formatInterval, formatTime, metricTitle } from "../format";
import { Empty } from "./common";

function RuleRows({ gate }: { gate: Gate }) {
  return (
    <Box overflowX="auto" borderWidth="1px" borderRadius="md" mb={3}>
      <Table.Root size="sm" data-testid="gate-rules">
        <Table.Header>
          <Table.Row>
            <Table.ColumnHeader>Rule (non-inferiority)</Table.ColumnHeader>
            <Table.ColumnHeader>Where</Table.ColumnHeader>
            <Table.ColumnHeader textAlign="end">Challenger − champion [paired 95 % interval]</Table.ColumnHeader>
            <Table.ColumnHeader>Verdict</Table.ColumnHeader>
          </Table.Row>
        </Table.Header>
        <Table.Body>
          {gate.rules.map((r) => (
            <Table.Row key={`${r.metric}@${r.stratum}`} data-testid={`gate-rule-${r.metric}`} title={r.detail}>
              <Table.Cell>
                {metricTitle(r.metric)} may be worse by less than {r.margin}
              </Table.Cell>
              <Table.Cell>
                {r.stratum === "overall" ? "whole test set" : r.stratum}
                {r.small ? " (small group)" : ""}
              </Table.Cell>
              <Table.Cell textAlign="end">
                {r.difference === undefined ? "—" : formatDelta(r.difference)}
                {r.low !== undefined && r.high !== undefined && (
                  <Text as="span" color="fg.muted" fontSize="xs" ms={1} whiteSpace="nowrap">
                    {formatInterval([r.low, r.high], true)}
                  </Text>
                )}
              </Table.Cell>
              <Table.Cell>
                <Badge colorPalette={r.passed ? "green" : "red"} variant="subtle">
                  {r.passed ? "holds" : "fails"}
                </Badge>
              </Table.Cell>
            </Table.Row>
          ))}
        </Table.Body>
      </Table.Root>
    </Box>
  );
}

/** The change-control gate: each non-inferiority rule with its paired interval and verdict,
 * the objective, whether approving needs an explicit override, a repeat of a rejected run and,
 * under the two-person rule, the approvals so far. */
export function GatePanel({ gate }: { gate?: Gate }) {
  if (!gate || !gate.evaluated) return <Empty>The gate is checked once the run is evaluated.</Empty>;
  const { approvals } = gate;
  return (
    <Box data-testid="gate">
      <Text fontSize="xs" color="fg.muted" mb={2}>
        A rule holds when the lower end of the paired interval of challenger − champion (higher is better) is above −margin:
        with 95 % confidence the challenger is worse by less than the margin.
      </Text>
      {!gate.championId ? (
        <Text fontSize="sm" mb={3}>
          No champion to compare with: this is the model's first run, so the rules have nothing to check.
        </Text>
      ) : gate.rules.length > 0 ? (
        <RuleRows gate={gate} />
      ) : (
        <Text fontSize="sm" mb={3} color="fg.muted">
          The model's approval policy states no non-inferiority rules.
        </Text>
      )}
      {gate.objective && (
        <Text fontSize="sm" mb={3} data-testid="gate-objective" color={gate.objective.worse ? "fg.error" : undefined}>
          Objective: {gate.objective.detail}.
        </Text>
      )}
      {gate.overrideRequired && (
        <Alert.Root status="warning" mb={3} data-testid="override-required">
          <Alert.Indicator />
          <Alert.Content>
            <Alert.Title>Approving this run needs an explicit override</Alert.Title>
            <Alert.Description>
              The challenger {gate.overrideReasons.join("; and ")}. The automatic policy does not approve it; a person may,
              by confirming an override with its own justification (recorded and audited as an override).
            </Alert.Description>
          </Alert.Content>
        </Alert.Root>
      )}
      {gate.duplicateOfRejected.map((twin) => (
        <Alert.Root status="warning" mb={3} key={twin.runId} data-testid="duplicate-of-rejected">
          <Alert.Indicator />
          <Alert.Content>
            <Alert.Title>This run repeats a rejected run</Alert.Title>
            <Alert.Description>
              Same snapshot, hyperparameters and training image as run {twin.slug}, rejected by {twin.rejectedBy} on{" "}
              {formatTime(twin.rejectedAt)}: {twin.description || "no reason given"}.
            </Alert.Description>
          </Alert.Content>
        </Alert.Root>
      ))}
      {approvals.required > 1 && (
        <Text fontSize="sm" data-testid="approvals-progress">
          Two-person rule: {approvals.required} different people must approve before the run deploys. Approved so far by{" "}
          {approvals.approvedBy.length ? approvals.approvedBy.join(", ") : "nobody"}
          {approvals.remaining > 0 ? ` (${approvals.remaining} more needed).` : "."}
        </Text>
      )}
    </Box>
  );
}
