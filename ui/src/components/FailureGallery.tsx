import { Badge, Box, Button, Flex, HStack, Image, SimpleGrid, Text } from "@chakra-ui/react";
import { useState } from "react";

import { apiUrl, type Run } from "../api";
import {
  describeCost,
  FAITHFULNESS_EXPLAINED,
  type FailureCase,
  faithfulnessVerdict,
  groupTitle,
  MAP_TITLES,
  picturePath,
  type PictureName,
} from "../failureCases";
import { formatNumber } from "../format";
import { Empty } from "./common";

type Shown = "image" | "occlusion" | "grad-cam";
const TONES = { good: "fg.success", weak: "fg.warning", bad: "fg.error" } as const;

function CaseCard({ run, item, shown }: { run: Run; item: FailureCase; shown: Shown }) {
  const pictures = item.pictures ?? [];
  const name: PictureName = pictures.includes(shown) ? shown : "image";
  const map = shown !== "image" ? item.maps[shown] : undefined;
  return (
    <Box borderWidth="1px" borderRadius="md" overflow="hidden" bg="bg.panel" data-testid={`failure-case-${item.case}`}>
      <Box bg="black" h="192px" display="flex" alignItems="center" justifyContent="center">
        {pictures.includes("image") ? (
          <Image
            src={apiUrl(picturePath(run.modelId, run.id, item, name))}
            alt={`${name === "image" ? "Test image" : `${MAP_TITLES[name as "occlusion"]} map`} of ${item.exampleId}`}
            loading="lazy"
            maxH="192px"
            objectFit="contain"
            data-testid={`failure-picture-${item.case}`}
            data-picture={name}
          />
        ) : (
          <Text color="fg.muted" fontSize="xs" p={2}>
            No picture
          </Text>
        )}
      </Box>
      <Box px={2} py={2} fontSize="sm">
        <Text>
          True <b>{item.trueLabel.name}</b>, called <b>{item.predictedLabel.name}</b> with confidence{" "}
          <b>{formatNumber(item.confidence, 2)}</b>
        </Text>
        <Text fontSize="xs" fontFamily="mono" color="fg.muted" truncate title={item.exampleId}>
          {item.exampleId}
        </Text>
        {item.mapsError && (
          <Text fontSize="xs" color="fg.warning">
            No maps: {item.mapsError}
          </Text>
        )}
        {(["occlusion", "grad-cam"] as const).map((method) => {
          const found = item.maps[method];
          if (!found) return null;
          const verdict = faithfulnessVerdict(found.faithfulness);
          return (
            <Text
              key={method}
              fontSize="xs"
              color={TONES[verdict.tone]}
              fontWeight={map && method === shown ? "semibold" : undefined}
              data-testid={`faithfulness-${item.case}-${method}`}
            >
              {MAP_TITLES[method]}: {verdict.text}
            </Text>
          );
        })}
      </Box>
    </Box>
  );
}

/** The failure gallery of a run: its most confident test errors per true label, as thumbnails with
 * a toggle for the saliency map overlay, each map's faithfulness in words, and what it cost. */
export function FailureGallery({ run }: { run: Run }) {
  const section = run.evaluation?.failureCases;
  const [shown, setShown] = useState<Shown>("image");
  if (!run.evaluation) return <Empty>No evaluation yet.</Empty>;
  if (!section) {
    return (
      <Empty>
        {run.problemDefinition?.problemType === "imgSeg"
          ? "Segmentation runs have no failure gallery."
          : "No failure cases for this run (evaluated before they were computed, or turned off)."}
      </Empty>
    );
  }
  const options: Shown[] = ["image", ...section.methods];
  return (
    <Box data-testid="failure-gallery">
      <Text fontSize="sm" mb={1}>
        The {section.perClass} most confident errors per true label on the test split
        {section.onePerCluster ? " (one per patient or group of copies)" : ""}, decided at {section.decidedBy}. Maps show
        what drives the (wrong) called label.
      </Text>
      <HStack gap={2} mb={3} wrap="wrap" role="group" aria-label="Map overlay">
        {options.map((option) => (
          <Button
            key={option}
            size="xs"
            variant={shown === option ? "solid" : "outline"}
            aria-pressed={shown === option}
            onClick={() => setShown(option)}
            data-testid={`overlay-${option}`}
          >
            {option === "image" ? "Image only" : MAP_TITLES[option]}
          </Button>
        ))}
      </HStack>
      {section.classes.map((group) => {
        const items = section.cases.filter((c) => c.trueLabel.index === group.trueLabel.index);
        return (
          <Box key={group.trueLabel.index} mb={4} data-testid={`failure-group-${group.trueLabel.index}`}>
            <Flex gap={2} align="baseline" mb={2} wrap="wrap">
              <Text fontWeight="semibold">{groupTitle(items[0]?.kind, group.trueLabel)}</Text>
              <Badge>
                {group.errors} of {group.images} wrong, {group.shown} shown
              </Badge>
            </Flex>
            {items.length === 0 ? (
              <Empty>No errors for this label.</Empty>
            ) : (
              <SimpleGrid columns={{ base: 2, md: 3, lg: 4, "2xl": 6 }} gap={3}>
                {items.map((item) => (
                  <CaseCard key={item.case} run={run} item={item} shown={shown} />
                ))}
              </SimpleGrid>
            )}
          </Box>
        );
      })}
      <Text fontSize="xs" color="fg.muted" data-testid="faithfulness-explained">
        {FAITHFULNESS_EXPLAINED}
      </Text>
      <Text fontSize="xs" color="fg.muted" data-testid="failure-cost">
        {describeCost(section.cost)}
        {section.containerMap ? "" : " The model's container offers no map of its own: occlusion only."}
      </Text>
    </Box>
  );
}
