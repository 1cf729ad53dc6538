import { Box, Heading, Table } from "@chakra-ui/react";

import type { ConfusionMatrix } from "../api";

export function ConfusionMatrixView({ title, matrix }: { title: string; matrix: ConfusionMatrix }) {
  const max = Math.max(1, ...matrix.counts.flat());
  return (
    <Box data-testid={`confusion-${title}`}>
      <Heading as="h4" size="sm" mb={2} textTransform="capitalize">
        {title}
      </Heading>
      <Table.Root size="sm" variant="outline" width="auto">
        <Table.Header>
          <Table.Row>
            <Table.ColumnHeader>true \ predicted</Table.ColumnHeader>
            {matrix.labels.map((l) => (
              <Table.ColumnHeader key={String(l)} textAlign="center">
                {String(l)}
              </Table.ColumnHeader>
            ))}
          </Table.Row>
        </Table.Header>
        <Table.Body>
          {matrix.counts.map((row, i) => (
            <Table.Row key={i}>
              <Table.ColumnHeader>{String(matrix.labels[i])}</Table.ColumnHeader>
              {row.map((count, j) => (
                <Table.Cell
                  key={j}
                  textAlign="center"
                  fontWeight={i === j ? "semibold" : undefined}
                  style={{
                    background: `color-mix(in srgb, var(--chakra-colors-${i === j ? "green" : "red"}-500) ${Math.round((count / max) * 55)}%, transparent)`,
                  }}
                >
                  {count}
                </Table.Cell>
              ))}
            </Table.Row>
          ))}
        </Table.Body>
      </Table.Root>
    </Box>
  );
}
