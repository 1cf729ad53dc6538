import { type ComponentProps, lazy, Suspense } from "react";

import { Loading } from "./common";

// recharts is the biggest part of the bundle: it loads with the first chart shown, and only
// the chart waits for it (its own Suspense), not the page.
const charts = () => import("./charts");
const Trials = lazy(() => charts().then((m) => ({ default: m.TrialsChart })));
const Reliability = lazy(() => charts().then((m) => ({ default: m.ReliabilityChart })));
const Metrics = lazy(() => charts().then((m) => ({ default: m.MetricsChart })));

export function TrialsChart(props: ComponentProps<typeof Trials>) {
  return (
    <Suspense fallback={<Loading what="the chart" />}>
      <Trials {...props} />
    </Suspense>
  );
}

export function ReliabilityChart(props: ComponentProps<typeof Reliability>) {
  return (
    <Suspense fallback={<Loading what="the chart" />}>
      <Reliability {...props} />
    </Suspense>
  );
}

export function MetricsChart(props: ComponentProps<typeof Metrics>) {
  return (
    <Suspense fallback={<Loading what="the chart" />}>
      <Metrics {...props} />
    </Suspense>
  );
}
