// Charts with recharts, coloured with the theme's tokens (light and dark). Loaded lazily
// (charts.lazy.ts): the tables of a page do not wait for the chart library.

import { Box, Text, useToken } from "@chakra-ui/react";
import {
  CartesianGrid,
  Legend,
  Line,
  LineChart,
  ResponsiveContainer,
  Scatter,
  ComposedChart,
  Tooltip,
  XAxis,
  YAxis,
} from "recharts";

import type { ReliabilityBin, Trial } from "../api";
import { formatNumber } from "../format";
import { describeTrial, type TrialPoint, trialSeries } from "../trials";

export const SERIES_COLORS = ["blue.500", "orange.500", "green.500", "purple.500", "red.500", "teal.500", "pink.500", "yellow.600"];

function useChartColors() {
  const [grid, text, ...series] = useToken("colors", ["border", "fg.muted", ...SERIES_COLORS]);
  return { grid, text, series };
}

const tooltipStyle = {
  contentStyle: { background: "var(--chakra-colors-bg-panel)", border: "1px solid var(--chakra-colors-border)" },
  labelStyle: { color: "var(--chakra-colors-fg)" },
};

/** Width of a y-axis whose ticks read like "0.8925" (recharts' default 60 px clips them). */
export const Y_AXIS_WIDTH = 72;

export function TrialsChart({
  trials,
  minimize = false,
  objective = "objective",
}: {
  trials: Trial[];
  minimize?: boolean;
  /** What the trials' values are (the model's objective metric), the y-axis title. */
  objective?: string;
}) {
  const { grid, text, series } = useChartColors();
  const [red] = useToken("colors", ["red.500"]);
  const { points, domain, counts } = trialSeries(trials, minimize);
  const numbers = points.map((p) => p.number);
  // Each state's markers get only its trials (a Scatter of the chart's rows would draw one
  // symbol per row, also where the trial has no value of that series).
  const only = (key: "complete" | "pruned" | "failed") => points.filter((p) => p[key] !== undefined);
  return (
    <Box
      height="280px"
      data-testid="trials-chart"
      role="img"
      aria-label={`Objective of each trial and the best so far: ${counts.complete} complete, ${counts.pruned} pruned, ${counts.failed} failed`}
    >
      <ResponsiveContainer initialDimension={{ width: 640, height: 280 }}>
        <ComposedChart data={points} margin={{ top: 8, right: 16, bottom: 8, left: 16 }}>
          <CartesianGrid stroke={grid} strokeDasharray="3 3" />
          <XAxis
            dataKey="number"
            type="number"
            domain={[Math.min(...numbers) - 0.5, Math.max(...numbers) + 0.5]}
            allowDecimals={false}
            tickFormatter={(n: number) => (Number.isInteger(n) ? String(n) : "")}
            stroke={text}
            label={{ value: "trial", position: "insideBottomRight", offset: -4, fill: text }}
          />
          <YAxis
            stroke={text}
            domain={domain}
            allowDataOverflow
            width={Y_AXIS_WIDTH}
            tickFormatter={(v: number) => formatNumber(v, 3)}
            label={{ value: `${objective}${minimize ? " (lower is better)" : ""}`, angle: -90, position: "insideLeft", offset: -8, fill: text, style: { textAnchor: "middle" } }}
          />
          <Tooltip {...tooltipStyle} content={<TrialTooltip />} />
          <Legend />
          <Scatter name={`complete (${counts.complete})`} dataKey="complete" data={only("complete")} fill={series[0]} shape="circle" legendType="circle" isAnimationActive={false} />
          <Scatter
            name={`pruned (${counts.pruned}): last reported value`}
            dataKey="pruned"
            data={only("pruned")}
            fill={series[1]}
            shape="triangle"
            legendType="triangle"
            isAnimationActive={false}
          />
          <Scatter name={`failed (${counts.failed}): no value`} dataKey="failed" data={only("failed")} fill={red} shape="cross" legendType="cross" isAnimationActive={false} />
          <Line name="best so far" dataKey="best" stroke={series[2]} dot={false} type="stepAfter" isAnimationActive={false} />
        </ComposedChart>
      </ResponsiveContainer>
    </Box>
  );
}

function TrialTooltip({ active, payload }: { active?: boolean; payload?: { payload?: TrialPoint }[] }) {
  const point = payload?.[0]?.payload;
  if (!active || !point) return null;
  return (
    <Box bg="bg.panel" borderWidth="1px" borderColor="border" rounded="sm" px={2} py={1} maxW="xs" fontSize="sm">
      <Text fontWeight="semibold">Trial {point.number}</Text>
      <Text>{describeTrial(point)}</Text>
      {point.best !== undefined && (
        <Text color="fg.muted" fontSize="xs">
          best so far {formatNumber(point.best, 4)}
        </Text>
      )}
    </Box>
  );
}

export function ReliabilityChart({ bins }: { bins: Record<string, ReliabilityBin[]> }) {
  const { grid, text, series } = useChartColors();
  const subjects = Object.keys(bins);
  const rows = new Map<number, Record<string, number>>([
    [0, { confidence: 0, ideal: 0 }],
    [1, { confidence: 1, ideal: 1 }],
  ]);
  for (const subject of subjects) {
    for (const bin of bins[subject]) {
      const key = Math.round(bin.confidence * 1000) / 1000;
      rows.set(key, { ...(rows.get(key) ?? { confidence: key, ideal: key }), [subject]: bin.accuracy });
    }
  }
  const data = [...rows.values()].sort((a, b) => a.confidence - b.confidence);
  return (
    <Box height="280px" data-testid="reliability-chart" role="img" aria-label="Reliability plot: accuracy against confidence">
      <ResponsiveContainer>
        <LineChart data={data} margin={{ top: 8, right: 16, bottom: 16, left: 0 }}>
          <CartesianGrid stroke={grid} strokeDasharray="3 3" />
          <XAxis dataKey="confidence" type="number" domain={[0, 1]} stroke={text} label={{ value: "confidence", position: "insideBottom", offset: -8, fill: text }} />
          <YAxis domain={[0, 1]} stroke={text} label={{ value: "accuracy", angle: -90, position: "insideLeft", fill: text }} />
          <Tooltip {...tooltipStyle} formatter={(v) => formatNumber(Number(v))} />
          <Legend verticalAlign="top" />
          <Line name="perfect calibration" dataKey="ideal" stroke={text} strokeDasharray="4 4" dot={false} connectNulls isAnimationActive={false} />
          {subjects.map((s, i) => (
            <Line key={s} name={s} dataKey={s} stroke={series[i % series.length]} connectNulls isAnimationActive={false} />
          ))}
        </LineChart>
      </ResponsiveContainer>
    </Box>
  );
}

export interface SeriesPoint {
  x: string;
  [series: string]: string | number | undefined;
}

export function MetricsChart({ data, series, metric = "value" }: { data: SeriesPoint[]; series: string[]; metric?: string }) {
  const { grid, text, series: colors } = useChartColors();
  if (data.length === 0 || series.length === 0) return <Text color="fg.muted">Nothing to chart yet.</Text>;
  return (
    <Box height="340px" data-testid="metrics-chart" role="img" aria-label={`${metric} across runs`}>
      <ResponsiveContainer initialDimension={{ width: 640, height: 340 }}>
        <LineChart data={data} margin={{ top: 8, right: 16, bottom: 24, left: 16 }}>
          <CartesianGrid stroke={grid} strokeDasharray="3 3" />
          <XAxis
            dataKey="x"
            stroke={text}
            tick={{ fontSize: 11 }}
            label={{ value: "run (oldest on the left)", position: "insideBottom", offset: -16, fill: text }}
          />
          <YAxis
            stroke={text}
            domain={["auto", "auto"]}
            width={Y_AXIS_WIDTH}
            tickFormatter={(v: number) => formatNumber(v, 3)}
            label={{ value: metric, angle: -90, position: "insideLeft", offset: -8, fill: text, style: { textAnchor: "middle" } }}
          />
          <Tooltip {...tooltipStyle} formatter={(v) => formatNumber(Number(v), 4)} />
          <Legend verticalAlign="top" />
          {series.map((s, i) => (
            <Line key={s} dataKey={s} name={s} stroke={colors[i % colors.length]} connectNulls dot isAnimationActive={false} />
          ))}
        </LineChart>
      </ResponsiveContainer>
    </Box>
  );
}
