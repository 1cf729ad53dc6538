// A chained dataset's curation (source.fromModel): which model's predictions chose its images,
// by what rule, how many it chose and left out, and the scoring batches and runs they came from.
import { Code, Table, Text } from "@chakra-ui/react";

export interface UpstreamReport {
  modelId: string;
  modelName: string;
  rule: string;
  predictionsRead?: number;
  imagesWithPrediction?: number;
  imagesSelected: number;
  leftOutNotSelected: number;
  leftOutWithoutPrediction: number;
  batches?: { batchId: string | null; runId: string | null; predictions: number; selected: number | null }[];
}

const count = (n: number | null | undefined) => (n ?? 0).toLocaleString("en-US");

export function UpstreamSelection({ upstream }: { upstream: UpstreamReport }) {
  return (
    <>
      <Text fontSize="sm" mb={2} data-testid="upstream-summary">
        {count(upstream.imagesSelected)} images selected by the predictions of model{" "}
        <strong>{upstream.modelName}</strong>; left out: {count(upstream.leftOutNotSelected)} it did not select,{" "}
        {count(upstream.leftOutWithoutPrediction)} without a prediction.
      </Text>
      <Text fontSize="xs" color="fg.muted" mb={2}>
        Rule: {upstream.rule}. The newest prediction of each image decides.
      </Text>
      {(upstream.batches ?? []).length > 0 && (
        <Table.Root size="sm" variant="outline" data-testid="upstream-batches">
          <Table.Header>
            <Table.Row>
              <Table.ColumnHeader>Scoring batch</Table.ColumnHeader>
              <Table.ColumnHeader>Model run</Table.ColumnHeader>
              <Table.ColumnHeader textAlign="end">Predictions</Table.ColumnHeader>
              <Table.ColumnHeader textAlign="end">Selected</Table.ColumnHeader>
            </Table.Row>
          </Table.Header>
          <Table.Body>
            {upstream.batches!.map((b) => (
              <Table.Row key={`${b.batchId}-${b.runId}`}>
                <Table.Cell>
                  <Code fontSize="xs">{b.batchId ?? "unknown"}</Code>
                </Table.Cell>
                <Table.Cell>
                  <Code fontSize="xs">{b.runId ?? "unknown"}</Code>
                </Table.Cell>
                <Table.Cell textAlign="end" whiteSpace="nowrap">
                  {count(b.predictions)}
                </Table.Cell>
                <Table.Cell textAlign="end" whiteSpace="nowrap">
                  {count(b.selected)}
                </Table.Cell>
              </Table.Row>
            ))}
          </Table.Body>
        </Table.Root>
      )}
    </>
  );
}
