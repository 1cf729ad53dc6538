import { Badge, Box, Button, Flex, Heading, HStack, Input, Link, NativeSelect, Table, Text } from "@chakra-ui/react";
import { useEffect, useState } from "react";

import type { NextRun } from "../api";
import { Empty, ErrorAlert, Loading, StatusBadge } from "../components/common";
import { loaded, useModelSummaries } from "../queries";
import { describeNextRun, formatNumber, formatTime, metricTitle, PROBLEM_TYPES, type View } from "../format";

type Sort = "name" | "problemType" | "dataset" | "lastRunAt" | "updatedAt";

const COLUMNS: { key: string; label: string; sort?: Sort }[] = [
  { key: "name", label: "Model", sort: "name" },
  { key: "problemType", label: "Problem type", sort: "problemType" },
  { key: "dataset", label: "Dataset", sort: "dataset" },
  { key: "deployed", label: "Deployment" },
  { key: "champion", label: "Champion" },
  { key: "lastRun", label: "Last run", sort: "lastRunAt" },
  { key: "next", label: "Next run" },
];

/** The query of the table's first page (main.tsx requests it before this code has loaded). */
export const FIRST_MODELS_PAGE = { sort: "name", order: "asc", limit: 25, offset: 0 } as const;

export function useDebounced<T>(value: T, ms = 300): T {
  const [debounced, setDebounced] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setDebounced(value), ms);
    return () => clearTimeout(timer);
  }, [value, ms]);
  return debounced;
}

export function ModelsPage({ go }: { go: (view: View) => void }) {
  const [search, setSearch] = useState("");
  const [sort, setSort] = useState<Sort>("name");
  const [order, setOrder] = useState<"asc" | "desc">("asc");
  const [limit, setLimit] = useState(25);
  const [offset, setOffset] = useState(0);
  const query = useDebounced(search);
  useEffect(() => setOffset(0), [query, sort, order, limit]);
  const page = loaded(useModelSummaries({ sort, order, limit, offset, search: query }));
  const toggleSort = (key: Sort) => {
    if (key === sort) setOrder(order === "asc" ? "desc" : "asc");
    else {
      setSort(key);
      setOrder(key === "lastRunAt" ? "desc" : "asc");
    }
  };
  const total = page.data?.totalEntries ?? 0;
  const rows = page.data?.modelSummaries ?? [];
  return (
    <Box>
      <Flex align="center" justify="space-between" mb={4} gap={3} wrap="wrap">
        <Heading as="h1" size="xl">
          Patient ML models
        </Heading>
        <HStack gap={2}>
          <Button size="sm" variant="outline" onClick={() => go({ kind: "model", tab: "new-dataset" })}>
            New dataset
          </Button>
          <Button size="sm" colorPalette="blue" onClick={() => go({ kind: "model", tab: "new-model" })}>
            New model
          </Button>
        </HStack>
      </Flex>
      <Flex mb={3} gap={3} align="center" wrap="wrap">
        <Input
          maxW="sm"
          size="sm"
          type="search"
          placeholder="Search name, description or dataset"
          aria-label="Search models"
          value={search}
          onChange={(e) => setSearch(e.target.value)}
        />
        <Text color="fg.muted" fontSize="sm" aria-live="polite">
          {page.loading ? "Loading…" : `${total} model${total === 1 ? "" : "s"}`}
        </Text>
      </Flex>
      {page.error && <ErrorAlert error={page.error} title="The models could not be loaded" />}
      {!page.data && page.loading && <Loading what="models" />}
      {page.data && (
        <Box overflowX="auto" borderWidth="1px" borderRadius="md">
          <Table.Root size="sm" interactive data-testid="models-table">
            <Table.Header>
              <Table.Row>
                {COLUMNS.map((c) => (
                  <Table.ColumnHeader
                    key={c.key}
                    aria-sort={c.sort === sort ? (order === "asc" ? "ascending" : "descending") : undefined}
                  >
                    {c.sort ? (
                      <Button
                        variant="plain"
                        size="xs"
                        px={0}
                        fontWeight="semibold"
                        onClick={() => toggleSort(c.sort!)}
                        aria-label={`Sort by ${c.label}`}
                      >
                        {c.label}
                        {c.sort === sort ? (order === "asc" ? " ▲" : " ▼") : ""}
                      </Button>
                    ) : (
                      c.label
                    )}
                  </Table.ColumnHeader>
                ))}
              </Table.Row>
            </Table.Header>
            <Table.Body>
              {rows.map((m) => (
                <Table.Row key={m.id} data-testid="model-row">
                  <Table.Cell maxW="xs">
                    <Link
                      href={`?view=model&modelId=${m.id}`}
                      fontWeight="semibold"
                      color="fg.info"
                      onClick={(e) => {
                        e.preventDefault();
                        go({ kind: "model", modelId: m.id });
                      }}
                    >
                      {m.name}
                    </Link>
                    <Text fontSize="xs" color="fg.muted" truncate title={m.description}>
                      {m.description || "—"}
                    </Text>
                  </Table.Cell>
                  <Table.Cell>{PROBLEM_TYPES[m.problemType] ?? m.problemType}</Table.Cell>
                  <Table.Cell>{m.datasetName}</Table.Cell>
                  <Table.Cell>
                    <Badge colorPalette={m.deployed ? "green" : "gray"} variant="subtle">
                      {m.deployed ? "Deployed" : "Not deployed"}
                    </Badge>
                  </Table.Cell>
                  <Table.Cell>
                    {m.champion ? (
                      <Box>
                        <Text fontSize="sm">{m.champion.slug}</Text>
                        <Text fontSize="xs" color="fg.muted">
                          {metricTitle(m.champion.metricName)} {formatNumber(m.champion.metricValue)}
                        </Text>
                      </Box>
                    ) : (
                      <Text color="fg.muted">—</Text>
                    )}
                  </Table.Cell>
                  <Table.Cell>
                    {m.lastRun ? (
                      <Box>
                        <StatusBadge status={m.lastRun.status} />
                        <Text fontSize="xs" color="fg.muted">
                          {formatTime(m.lastRun.start)}
                        </Text>
                      </Box>
                    ) : (
                      <Text color="fg.muted">never</Text>
                    )}
                  </Table.Cell>
                  <Table.Cell>
                    <NextRunCell next={m.nextRun} />
                  </Table.Cell>
                </Table.Row>
              ))}
            </Table.Body>
          </Table.Root>
          {rows.length === 0 && <Empty>{query ? `No model matches “${query}”.` : "No models yet."}</Empty>}
        </Box>
      )}
      <Pager total={total} limit={limit} offset={offset} setOffset={setOffset} setLimit={setLimit} />
    </Box>
  );
}

function NextRunCell({ next }: { next: NextRun }) {
  const { text, detail, muted } = describeNextRun(next);
  return (
    <Text fontSize="sm" color={muted ? "fg.muted" : undefined} title={detail || undefined} data-testid="next-run">
      {text}
    </Text>
  );
}

export function Pager({
  total,
  limit,
  offset,
  setOffset,
  setLimit,
}: {
  total: number;
  limit: number;
  offset: number;
  setOffset: (o: number) => void;
  setLimit?: (l: number) => void;
}) {
  const last = Math.min(total, offset + limit);
  return (
    <Flex mt={3} align="center" gap={3} wrap="wrap" justify="flex-end">
      {setLimit && (
        <NativeSelect.Root size="sm" width="auto">
          <NativeSelect.Field
            aria-label="Rows per page"
            value={limit}
            onChange={(e) => setLimit(Number(e.target.value))}
          >
            {[10, 25, 50, 100].map((n) => (
              <option key={n} value={n}>
                {n} per page
              </option>
            ))}
          </NativeSelect.Field>
          <NativeSelect.Indicator />
        </NativeSelect.Root>
      )}
      <Text fontSize="sm" color="fg.muted">
        {total === 0 ? "0" : `${offset + 1}–${last}`} of {total}
      </Text>
      <Button size="sm" variant="outline" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - limit))}>
        Previous
      </Button>
      <Button size="sm" variant="outline" disabled={last >= total} onClick={() => setOffset(offset + limit)}>
        Next
      </Button>
    </Flex>
  );
}
