// The curation report's near-duplicate section: what the numbers mean, whether any group
// crosses splits, and the listed groups folded away, a page at a time, with thumbnails (issue
// 31: it was a 5,700 px wall of example ids).

import { Badge, Box, Button, Code, Flex, Heading, HStack, Image, Text } from "@chakra-ui/react";
import { useState } from "react";

import { previewUrl } from "../labeling/examplesApi";
import { plural } from "../format";
import { Empty } from "./common";

export interface NearDuplicateGroup {
  examples: string[];
  patients?: number;
  labels?: string[];
  similarity?: number;
}

export interface NearDuplicateGroups {
  count: number;
  items: NearDuplicateGroup[];
}

export interface CrossSplit {
  count: number;
  testWithCopyInTrain?: number;
  items: { example: string; split?: string | null; copiesIn: string[] }[];
  itemsOmitted?: number;
}

export interface NearDuplicateReport {
  enabled?: boolean;
  minCorrelation?: number;
  transforms?: string[];
  groups?: number;
  imagesInGroups?: number;
  largestGroup?: number;
  groupsSpanningPatients?: NearDuplicateGroups;
  groupsWithDifferentLabels?: NearDuplicateGroups;
  crossSplit?: CrossSplit;
}

export const GROUPS_PER_PAGE = 5;
const THUMBNAILS = 6;

/** "Showing 1–5 of 50 listed (294 in all; the report lists the first 50)". */
export function showing(from: number, to: number, listed: number, total: number): string {
  const range = listed === 0 ? "none" : `${from + 1}–${to} of ${listed}`;
  return total > listed ? `Showing ${range} listed (${total.toLocaleString("en")} in all; the report lists the first ${listed})` : `Showing ${range}`;
}

function Pages({ total, offset, setOffset }: { total: number; offset: number; setOffset: (n: number) => void }) {
  if (total <= GROUPS_PER_PAGE) return null;
  return (
    <HStack gap={2}>
      <Button size="xs" variant="outline" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - GROUPS_PER_PAGE))}>
        Previous
      </Button>
      <Button size="xs" variant="outline" disabled={offset + GROUPS_PER_PAGE >= total} onClick={() => setOffset(offset + GROUPS_PER_PAGE)}>
        Next
      </Button>
    </HStack>
  );
}

function GroupList({
  title,
  explain,
  groups,
  describe,
  datasetId,
  testId,
}: {
  title: string;
  explain: string;
  groups?: NearDuplicateGroups;
  describe: (g: NearDuplicateGroup) => string;
  datasetId: string;
  testId: string;
}) {
  const [open, setOpen] = useState(false);
  const [offset, setOffset] = useState(0);
  const total = groups?.count ?? 0;
  const items = groups?.items ?? [];
  const page = items.slice(offset, offset + GROUPS_PER_PAGE);
  return (
    <Box mb={4} data-testid={testId}>
      <Flex align="center" gap={3} wrap="wrap">
        <Heading as="h4" size="sm">
          {title}: {plural(total, "group")}
        </Heading>
        {items.length > 0 && (
          <Button size="xs" variant="ghost" aria-expanded={open} onClick={() => setOpen(!open)}>
            {open ? "Hide groups" : "Show groups"}
          </Button>
        )}
      </Flex>
      <Text fontSize="xs" color="fg.muted" mb={1}>
        {explain}
      </Text>
      {total === 0 ? (
        <Empty>None.</Empty>
      ) : (
        open && (
          <Box>
            <Flex align="center" gap={3} mb={2} wrap="wrap">
              <Text fontSize="xs" color="fg.muted" data-testid="groups-shown">
                {showing(offset, offset + page.length, items.length, total)}
              </Text>
              <Pages total={items.length} offset={offset} setOffset={setOffset} />
            </Flex>
            <Box as="ul" listStyleType="none">
              {page.map((g, i) => (
                <Box as="li" key={offset + i} mb={2} data-testid="near-duplicate-group">
                  <HStack gap={1} wrap="wrap" mb={1}>
                    {g.examples.slice(0, THUMBNAILS).map((id) => (
                      <Image
                        key={id}
                        src={previewUrl(datasetId, id, 96)}
                        alt={`example ${id}`}
                        title={id}
                        boxSize="48px"
                        objectFit="cover"
                        borderRadius="sm"
                        loading="lazy"
                      />
                    ))}
                    {g.examples.length > THUMBNAILS && (
                      <Text fontSize="xs" color="fg.muted">
                        +{g.examples.length - THUMBNAILS} more
                      </Text>
                    )}
                  </HStack>
                  <Text fontSize="xs">
                    {plural(g.examples.length, "image")} · {describe(g)}
                    {g.similarity !== undefined ? ` · weakest similarity ${g.similarity.toFixed(3)}` : ""}
                  </Text>
                  <Code fontSize="2xs" display="block" truncate title={g.examples.join(", ")} maxW="full">
                    {g.examples.join(", ")}
                  </Code>
                </Box>
              ))}
            </Box>
          </Box>
        )
      )}
    </Box>
  );
}

function CrossSplitNotice({ cross }: { cross?: CrossSplit }) {
  const [open, setOpen] = useState(false);
  if (!cross) {
    return (
      <Text fontSize="sm" data-testid="cross-split">
        This report predates the cross-split check: curate again to see whether any group crosses splits.
      </Text>
    );
  }
  if (cross.count === 0) {
    return (
      <Text fontSize="sm" data-testid="cross-split">
        <Badge colorPalette="green" variant="subtle" mr={2}>
          no group crosses splits
        </Badge>
        Every group of copies sits in one split: no test image has a copy in training.
      </Text>
    );
  }
  const listed = cross.items.length;
  return (
    <Box data-testid="cross-split">
      <Text fontSize="sm">
        <Badge colorPalette="orange" variant="subtle" mr={2}>
          {plural(cross.count, "image")} with a copy in another split
        </Badge>
        {cross.testWithCopyInTrain ? `${plural(cross.testWithCopyInTrain, "test image")} with a copy in training. ` : ""}
        They were assigned a split before the copy was found and keep it (a split never changes); new copies join their group's
        split.
        {listed > 0 && (
          <Button size="xs" variant="ghost" ml={2} aria-expanded={open} onClick={() => setOpen(!open)}>
            {open ? "Hide" : "Show"}
          </Button>
        )}
      </Text>
      {open && (
        <Box fontSize="xs" mt={1}>
          <Text color="fg.muted">{showing(0, listed, listed, cross.count)}</Text>
          {cross.items.map((c) => (
            <Text key={c.example}>
              <Code fontSize="2xs">{c.example}</Code> in {c.split ?? "?"}, copies in {c.copiesIn.join(", ")}
            </Text>
          ))}
        </Box>
      )}
    </Box>
  );
}

export function NearDuplicates({ near, datasetId, exampleCount }: { near?: NearDuplicateReport; datasetId: string; exampleCount: number }) {
  if (!near?.enabled) return <Empty>Near-duplicate detection is off for this dataset (curation.nearDuplicates).</Empty>;
  const groups = near.groups ?? 0;
  const transforms = near.transforms?.length ? near.transforms.join(", ") : "small changes";
  return (
    <Box data-testid="near-duplicates">
      <Text fontSize="sm" mb={2} data-testid="near-duplicate-summary">
        {plural(groups, "group")} of near-duplicate images: {plural(near.imagesInGroups ?? 0, "image")} of {exampleCount.toLocaleString("en")}{" "}
        are copies of another image (under {transforms}
        {near.minCorrelation !== undefined ? `, correlation ≥ ${near.minCorrelation}` : ""})
        {near.largestGroup ? `; the largest group has ${plural(near.largestGroup, "image")}` : ""}. A group is one unit when splitting:
        all its images go to the same split, so a copy of a training image never tests the model. Groups are normal (flipped or
        re-exported slices); the lists below are the ones to review.
      </Text>
      <Box mb={4}>
        <CrossSplitNotice cross={near.crossSplit} />
      </Box>
      <GroupList
        title="Groups spanning patients"
        explain="Copies filed under different patients: possibly a mis-filed patient id, or one image sent twice."
        groups={near.groupsSpanningPatients}
        describe={(g) => plural(g.patients ?? 0, "patient")}
        datasetId={datasetId}
        testId="groups-spanning-patients"
      />
      <GroupList
        title="Groups with different labels"
        explain="Copies of one image with different confirmed labels: at least one label is likely wrong."
        groups={near.groupsWithDifferentLabels}
        describe={(g) => (g.labels ?? []).join(" vs ")}
        datasetId={datasetId}
        testId="groups-with-different-labels"
      />
    </Box>
  );
}
