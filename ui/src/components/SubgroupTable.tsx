import { Badge, Box, Flex, NativeSelect, Table, Text } from "@chakra-ui/react";
import { useState } from "react";

import type { IntervalValue, Run, Subgroup } from "../api";
import { formatDelta, metricTitle } from "../format";
import { Empty } from "./common";

const LOWER_IS_BETTER = new Set(["logLoss", "expectedCalibrationError"]);

/** The metric shown first: the gate's objective, else balanced accuracy / mean Dice. */
export function defaultSubgroupMetric(run: Run, available: string[]): string | undefined {
  const wanted = [run.gate?.objective?.metric, "balancedAccuracy", "meanDice", "auroc"];
  return wanted.find((m): m is string => !!m && available.includes(m)) ?? available[0];
}

/** Whether the challenger is clearly worse in a subgroup: the whole paired interval is on the
 * worse side of zero (oriented by the metric's direction). */
export function clearlyWorse(metric: string, difference?: IntervalValue): boolean {
  if (!difference || difference.low == null || difference.high == null) return false;
  return LOWER_IS_BETTER.has(metric) ? difference.low > 0 : difference.high < 0;
}

/** "positive 48 %" (binary: the last label) or "a 30 % · b 70 %". */
export function formatPrevalence(prevalence?: Record<string, number>): string {
  if (!prevalence) return "—";
  const entries = Object.entries(prevalence);
  const shown = entries.length === 2 ? entries.slice(1) : entries;
  return shown.map(([label, share]) => `${label} ${Math.round(share * 100)} %`).join(" · ");
}

/** Three decimals always (a subgroup's 1 and 0 are measurements too, not counts). */
function fixed(value: number | null | undefined, signed?: boolean): string {
  if (value === undefined || value === null || Number.isNaN(value)) return "—";
  return signed ? formatDelta(value) : value.toFixed(3);
}

function ValueCell({ found, signed }: { found?: IntervalValue; signed?: boolean }) {
  return (
    <Table.Cell textAlign="end" whiteSpace="nowrap">
      {fixed(found?.value, signed)}
      {found && found.low != null && found.high != null && (
        <Text as="span" color="fg.muted" fontSize="xs" ms={1}>
          [{fixed(found.low, signed)}, {fixed(found.high, signed)}]
        </Text>
      )}
    </Table.Cell>
  );
}

function Rows({ groups, metric, failed, hasChampion }: {
  groups: Subgroup[];
  metric: string;
  failed: Map<string, string>;
  hasChampion: boolean;
}) {
  return (
    <>
      {groups.map((g) => {
        const worse = clearlyWorse(metric, g.differences[metric]);
        const rule = failed.get(g.name);
        return (
          <Table.Row key={g.name} data-testid={`subgroup-${g.name}`} bg={rule ? "red.subtle" : undefined}>
            <Table.Cell>
              {Object.entries(g.attributes ?? { [g.attribute ?? ""]: g.value ?? g.name }).map(([k, v]) => (
                <Text as="span" key={k} me={2}>
                  <Text as="span" color="fg.muted">{k}</Text> {v}
                </Text>
              ))}
            </Table.Cell>
            <Table.Cell whiteSpace="nowrap">
              {g.images} img · {g.clusters} cl
            </Table.Cell>
            <Table.Cell whiteSpace="nowrap">{formatPrevalence(g.prevalence)}</Table.Cell>
            <ValueCell found={g.intervals?.challenger?.[metric] ?? { value: g.challenger[metric] }} />
            {hasChampion && <ValueCell found={g.intervals?.champion?.[metric] ?? { value: g.champion[metric] }} />}
            {hasChampion && <ValueCell found={g.differences[metric]} signed />}
            <Table.Cell>
              <Flex gap={1} wrap="wrap">
                {g.small && (
                  <Badge colorPalette="gray" variant="subtle" title="Fewer independent clusters than the dataset's minClusters: the interval is rough.">
                    too small to conclude
                  </Badge>
                )}
                {rule && (
                  <Badge colorPalette="red" variant="solid" title={rule}>
                    fails a rule
                  </Badge>
                )}
                {worse && !rule && (
                  <Badge colorPalette="orange" variant="subtle">
                    challenger worse
                  </Badge>
                )}
              </Flex>
            </Table.Cell>
          </Table.Row>
        );
      })}
    </>
  );
}

function GroupTable({ title, groups, metric, failed, hasChampion, testId }: {
  title: string;
  groups: Subgroup[];
  metric: string;
  failed: Map<string, string>;
  hasChampion: boolean;
  testId: string;
}) {
  return (
    <Box overflowX="auto" borderWidth="1px" borderRadius="md" mb={3}>
      <Table.Root size="sm" data-testid={testId}>
        <Table.Header>
          <Table.Row>
            <Table.ColumnHeader>{title}</Table.ColumnHeader>
            <Table.ColumnHeader title="Test images · independent clusters (patients, or copy groups where larger)">
              n · k
            </Table.ColumnHeader>
            <Table.ColumnHeader>Prevalence</Table.ColumnHeader>
            <Table.ColumnHeader textAlign="end">Challenger</Table.ColumnHeader>
            {hasChampion && <Table.ColumnHeader textAlign="end">Champion</Table.ColumnHeader>}
            {hasChampion && <Table.ColumnHeader textAlign="end">Challenger − champion (paired)</Table.ColumnHeader>}
            <Table.ColumnHeader />
          </Table.Row>
        </Table.Header>
        <Table.Body>
          <Rows groups={groups} metric={metric} failed={failed} hasChampion={hasChampion} />
        </Table.Body>
      </Table.Root>
    </Box>
  );
}

/** The run's subgroups: each attribute value and each pair of attributes, with n images and
 * k clusters, prevalence, the chosen metric for both models with 95 % intervals (clusters
 * resampled within the subgroup), the paired difference, a "too small to conclude" flag and
 * the gate's failed rules. */
export function SubgroupTable({ run }: { run: Run }) {
  const groups = run.evaluation?.subgroups;
  const settings = run.evaluation?.subgroupSettings;
  const available = Object.keys(groups?.[0]?.intervals?.challenger ?? groups?.[0]?.challenger ?? {});
  const [chosen, setChosen] = useState<string | undefined>(undefined);
  if (!run.evaluation) return <Empty>Subgroups are reported once the run is evaluated.</Empty>;
  if (!groups || groups.length === 0)
    return (
      <Empty>
        No subgroups: the snapshot's examples carry no attributes (sex, age band, site, device). Configure
        curation.subgroups on the dataset and curate again; see docs/subgroups.md.
      </Empty>
    );
  const metric = chosen ?? defaultSubgroupMetric(run, available) ?? "";
  const hasChampion = !!run.evaluation.championId;
  const failed = new Map(
    (run.gate?.rules ?? []).filter((r) => !r.passed && r.stratum !== "overall").map((r) => [r.stratum, r.detail]),
  );
  const singles = groups.filter((g) => !g.pair);
  const pairs = groups.filter((g) => g.pair);
  const missing = Object.entries(settings?.missing ?? {}).filter(([, n]) => n > 0);
  return (
    <Box data-testid="subgroups">
      <Flex align="center" gap={2} mb={2} wrap="wrap">
        <Text fontSize="sm">Metric</Text>
        <NativeSelect.Root size="sm" width="auto">
          <NativeSelect.Field aria-label="Subgroup metric" value={metric} onChange={(e) => setChosen(e.target.value)}>
            {available.map((m) => (
              <option key={m} value={m}>
                {metricTitle(m)}
              </option>
            ))}
          </NativeSelect.Field>
          <NativeSelect.Indicator />
        </NativeSelect.Root>
      </Flex>
      <Text fontSize="xs" color="fg.muted" mb={2}>
        n images · k independent clusters per subgroup; brackets are 95 % intervals that resample the subgroup's own
        clusters, differences are paired. A subgroup with fewer than {settings?.minClusters ?? 30} clusters is too small
        to conclude either way.
      </Text>
      <GroupTable title="Subgroup" groups={singles} metric={metric} failed={failed} hasChampion={hasChampion} testId="subgroup-table" />
      {pairs.length > 0 && (
        <details>
          <summary>
            <Text as="span" fontSize="sm">
              Pairs of attributes ({pairs.length} subgroups, {pairs.filter((g) => g.small).length} too small to conclude)
            </Text>
          </summary>
          <Box mt={2}>
            <GroupTable title="Pair" groups={pairs} metric={metric} failed={failed} hasChampion={hasChampion} testId="subgroup-pairs" />
          </Box>
        </details>
      )}
      {missing.length > 0 && (
        <Text fontSize="xs" color="fg.muted" data-testid="subgroup-missing">
          Test images without a value (in no subgroup of that attribute):{" "}
          {missing.map(([a, n]) => `${a} ${n}`).join(", ")}.
        </Text>
      )}
    </Box>
  );
}
