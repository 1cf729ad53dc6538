// The model page's Examples tab: the dataset's examples as a grid of thumbnails with filters and
// counts per status (server paging by keyset marker), and the labelling view of one example.

import { Badge, Box, Button, Flex, HStack, Image, Input, NativeSelect, SimpleGrid, Text } from "@chakra-ui/react";
import { useCallback, useEffect, useRef, useState } from "react";

import { keepPreviousData, useQuery, useQueryClient } from "@tanstack/react-query";

import type { Model, Permissions } from "../api";
import { listExamplesOptions } from "../client/@tanstack/react-query.gen";
import { Empty, ErrorAlert, type Loaded, Loading } from "../components/common";
import { actionFor, isTyping } from "../labeling/keyboard";
import {
  type DatasetInfo,
  describePrediction,
  type Filters,
  type Counts,
  type ExampleItem,
  getHint,
  initialFilters,
  previewUrl,
  type Status,
} from "../labeling/examplesApi";
import { LabelPanel } from "../labeling/LabelPanel";
import { invalidateDataset, loaded, useDataset } from "../queries";

const PAGE = 48;
const STATUS_TABS: { value?: Status; title: string }[] = [
  { value: undefined, title: "All" },
  { value: "unlabeled", title: "Unlabeled" },
  { value: "draft", title: "Draft" },
  { value: "confirmed", title: "Labeled" },
];

export function statusPalette(status: string): string {
  return status === "confirmed" ? "green" : status === "draft" ? "orange" : "gray";
}

export function ExamplesTab({ model, permissions }: { model: Model; permissions: Permissions }) {
  // The dataset's problem definition is read as this tab knows it (the generated DatasetConfig).
  const dataset = loaded(useDataset(model.datasetId)) as unknown as Loaded<{ dataset: DatasetInfo }>;
  if (dataset.error) return <ErrorAlert error={dataset.error} title="The dataset cannot be shown" />;
  if (!dataset.data) return <Loading what="the dataset" />;
  return <Examples dataset={dataset.data.dataset} model={model} permissions={permissions} />;
}

function Examples({ dataset, model, permissions }: { dataset: DatasetInfo; model: Model; permissions: Permissions }) {
  const [filters, setFilters] = useState<Filters>(() => initialFilters(model));
  const [predicting, setPredicting] = useState<{ done: number; of: number } | null>(null);
  const [predictError, setPredictError] = useState<string | null>(null);
  const [markers, setMarkers] = useState<(string | undefined)[]>([undefined]); // one per page seen
  const [selected, setSelected] = useState(0);
  const [open, setOpen] = useState<string | null>(null);
  const client = useQueryClient();
  // Labels and hints written here change the counts and the pages: asked again.
  const refresh = () => void invalidateDataset(client, dataset.id);
  const [patientKey, setPatientKey] = useState("");
  // Until the user picks a filter: the tab opens on Unlabeled, and moves on to what there is
  // when nothing is left to label (issue 31: a clinician's first sight was "Unlabeled 0").
  const [untouched, setUntouched] = useState(true);
  const [movedOn, setMovedOn] = useState<string | null>(null);
  const grid = useRef<HTMLDivElement>(null);
  const marker = markers[markers.length - 1];
  const page = loaded(
    useQuery({
      ...listExamplesOptions({ path: { dataset_id: dataset.id }, query: { ...filters, limit: PAGE, marker } }),
      placeholderData: keepPreviousData,
    }),
  ) as unknown as Loaded<{ examples: ExampleItem[]; marker?: string; counts: Counts }>;
  const labels = dataset.problemDefinition.labelDefinition.labels;
  const examples = page.data?.examples ?? [];
  const counts = page.data?.counts;

  // The champion's hints for the page's examples without one, one at a time (each is kept,
  // so the "has prediction" filter finds them); never saved as labels.
  const predictPage = async () => {
    const missing = examples.filter((e) => !e.prediction).map((e) => e.id);
    setPredicting({ done: 0, of: missing.length });
    setPredictError(null);
    try {
      for (const [done, id] of missing.entries()) {
        await getHint(dataset.id, id, model.id);
        setPredicting({ done: done + 1, of: missing.length });
      }
      setPredicting(null);
    } catch (e) {
      setPredicting(null);
      setPredictError((e as Error).message);
    }
    refresh();
  };

  useEffect(() => {
    if (!untouched || !counts || filters.status !== "unlabeled" || counts.unlabeled > 0 || counts.total === 0) return;
    setUntouched(false);
    const status: Status | undefined = counts.draft > 0 ? "draft" : undefined;
    setMovedOn(
      status === "draft"
        ? "Nothing is left unlabeled: showing the drafts, which wait for a confirmed label."
        : "Nothing is left to label: every example has a confirmed label. Showing all examples.",
    );
    setFilters({ ...filters, status });
    setMarkers([undefined]);
    setSelected(0);
  }, [untouched, counts, filters]);

  const change = (next: Filters) => {
    setUntouched(false);
    setMovedOn(null);
    setFilters(next);
    setMarkers([undefined]);
    setSelected(0);
  };

  const onKey = useCallback(
    (e: KeyboardEvent) => {
      if (open || isTyping(e.target)) return;
      const action = actionFor(e);
      const columns = Math.max(1, Math.round((grid.current?.clientWidth ?? 800) / 150));
      if (e.key === "ArrowDown") setSelected((s) => Math.min(examples.length - 1, s + columns));
      else if (e.key === "ArrowUp") setSelected((s) => Math.max(0, s - columns));
      else if (action?.type === "next") setSelected((s) => Math.min(examples.length - 1, s + 1));
      else if (action?.type === "previous") setSelected((s) => Math.max(0, s - 1));
      else if (action?.type === "confirm" && examples[selected]) setOpen(examples[selected].id);
      else return;
      e.preventDefault();
    },
    [open, examples, selected],
  );
  useEffect(() => {
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onKey]);

  if (open) {
    return (
      <LabelPanel
        dataset={dataset}
        model={model}
        mayEdit={permissions.mayEdit}
        user={permissions.user}
        exampleId={open}
        filters={filters}
        pageIds={examples.map((e) => e.id)}
        onOpen={setOpen}
        onClose={() => {
          setOpen(null);
          refresh();
        }}
      />
    );
  }

  return (
    <Box data-testid="examples-tab">
      <Flex gap={3} wrap="wrap" align="center" mb={3}>
        <HStack gap={1} role="tablist" aria-label="Label status">
          {STATUS_TABS.map((tab) => {
            const count = counts ? (tab.value ? counts[tab.value] : counts.total) : undefined;
            const active = filters.status === tab.value;
            return (
              <Button
                key={tab.title}
                size="sm"
                role="tab"
                aria-selected={active}
                variant={active ? "solid" : "outline"}
                colorPalette={active ? "blue" : "gray"}
                data-testid={`status-${tab.value ?? "all"}`}
                onClick={() => change({ ...filters, status: tab.value })}
              >
                {tab.title}
                {count !== undefined && (
                  <Badge size="sm" variant={active ? "surface" : "subtle"} ml={1}>
                    {count.toLocaleString()}
                  </Badge>
                )}
              </Button>
            );
          })}
        </HStack>
        {dataset.problemDefinition.problemType === "imgClf" && (
          <NativeSelect.Root size="sm" width="auto">
            <NativeSelect.Field
              aria-label="Label"
              value={filters.labelIndex ?? ""}
              onChange={(e) => change({ ...filters, labelIndex: e.target.value === "" ? undefined : Number(e.target.value) })}
            >
              <option value="">Any label</option>
              {labels.map((l) => (
                <option key={l.id} value={l.index}>
                  {l.name}
                </option>
              ))}
            </NativeSelect.Field>
            <NativeSelect.Indicator />
          </NativeSelect.Root>
        )}
        <NativeSelect.Root size="sm" width="auto">
          <NativeSelect.Field
            aria-label="Split"
            value={filters.split ?? ""}
            onChange={(e) => change({ ...filters, split: e.target.value || undefined })}
          >
            <option value="">Any split</option>
            <option value="train">train</option>
            <option value="validation">validation</option>
            <option value="test">test</option>
            <option value="unassigned">not in a snapshot yet</option>
          </NativeSelect.Field>
          <NativeSelect.Indicator />
        </NativeSelect.Root>
        <Input
          size="sm"
          maxW="xs"
          type="search"
          aria-label="Patient key"
          placeholder="Patient key"
          value={patientKey}
          onChange={(e) => setPatientKey(e.target.value)}
          onKeyDown={(e) => e.key === "Enter" && change({ ...filters, patientKey: patientKey.trim() || undefined })}
          onBlur={() => change({ ...filters, patientKey: patientKey.trim() || undefined })}
        />
        {model.championId && (
          <NativeSelect.Root size="sm" width="auto">
            <NativeSelect.Field
              aria-label="Prediction"
              value={filters.hasPrediction ?? ""}
              onChange={(e) => change({ ...filters, hasPrediction: (e.target.value || undefined) as Filters["hasPrediction"] })}
            >
              <option value="">With or without prediction</option>
              <option value="true">Has a prediction</option>
              <option value="false">No prediction yet</option>
            </NativeSelect.Field>
            <NativeSelect.Indicator />
          </NativeSelect.Root>
        )}
        {model.championId && (
          <Button
            size="sm"
            variant="outline"
            data-testid="predict-page"
            title="Ask the deployed champion for a hint on each example of this page that has none (never saved as labels)"
            disabled={predicting !== null || !examples.some((e) => !e.prediction)}
            onClick={() => void predictPage()}
          >
            {predicting ? `Predicting ${predicting.done}/${predicting.of}…` : "Predict this page"}
          </Button>
        )}
        <Box flex="1" />
        <Text fontSize="sm" color="fg.muted">
          ← → move · Enter opens · 1–9 label · D draft · Enter confirm
        </Text>
      </Flex>
      {page.error && <ErrorAlert error={page.error} title="The examples cannot be listed" />}
      {predictError && <ErrorAlert error={new Error(predictError)} title="The champion could not predict every example" />}
      {!page.data && !page.error && <Loading what="the examples" />}
      {movedOn && (
        <Text fontSize="sm" color="fg.muted" mb={2} data-testid="examples-moved-on">
          {movedOn}
        </Text>
      )}
      {page.data && !examples.length && (
        <Empty>
          {counts && counts.total === 0
            ? "The dataset has no examples yet: they appear once its FHIR source holds images of its codes."
            : "No example matches these filters: pick another status above, or clear the label, split, patient or prediction filter."}
        </Empty>
      )}
      <SimpleGrid ref={grid} minChildWidth="136px" gap={3} data-testid="examples-grid" opacity={page.loading ? 0.6 : 1}>
        {examples.map((example, i) => (
          <Box
            key={example.id}
            as="button"
            data-testid="example-tile"
            data-example-id={example.id}
            aria-label={`Example ${example.id}, ${example.status}`}
            aria-current={i === selected}
            textAlign="left"
            borderWidth={i === selected ? "2px" : "1px"}
            borderColor={i === selected ? "colorPalette.solid" : "border"}
            colorPalette="blue"
            rounded="md"
            overflow="hidden"
            bg="bg.panel"
            _hover={{ borderColor: "colorPalette.solid" }}
            onClick={() => {
              setSelected(i);
              setOpen(example.id);
            }}
          >
            <Box bg="bg.emphasized" h="128px" display="flex" alignItems="center" justifyContent="center">
              <Image
                src={previewUrl(dataset.id, example.id, 128)}
                alt=""
                loading="lazy"
                w="100%"
                h="128px"
                objectFit="contain"
                css={{ imageRendering: "pixelated" }}
              />
            </Box>
            <Box px={2} py={1}>
              <Text fontSize="xs" fontFamily="mono" truncate title={example.id}>
                {example.id}
              </Text>
              <HStack gap={1} mt={0.5}>
                <Badge size="sm" colorPalette={statusPalette(example.status)} variant="subtle">
                  {example.status === "confirmed" ? "labeled" : example.status}
                </Badge>
                {example.labelName && (
                  <Text fontSize="xs" color="fg.muted" truncate>
                    {example.labelName}
                  </Text>
                )}
                {example.label?.mask && (
                  <Text fontSize="xs" color="fg.muted">
                    mask
                  </Text>
                )}
              </HStack>
              {example.prediction && (
                <Text fontSize="xs" color="fg.info" truncate data-testid="tile-prediction" title="The deployed champion's prediction (a hint)">
                  ◇ {describePrediction(example.prediction, labels)}
                </Text>
              )}
            </Box>
          </Box>
        ))}
      </SimpleGrid>
      <Flex justify="flex-end" align="center" gap={2} mt={3}>
        <Text fontSize="sm" color="fg.muted">
          Page {markers.length}
          {counts ? ` · ${(filters.status ? counts[filters.status] : counts.total).toLocaleString()} examples` : ""}
        </Text>
        <Button size="xs" variant="outline" disabled={markers.length < 2} onClick={() => setMarkers((m) => m.slice(0, -1))}>
          Previous
        </Button>
        <Button
          size="xs"
          variant="outline"
          disabled={!page.data?.marker}
          onClick={() => {
            setMarkers((m) => [...m, page.data!.marker]);
            setSelected(0);
          }}
        >
          Next
        </Button>
      </Flex>
    </Box>
  );
}
