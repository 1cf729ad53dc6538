import { Box } from "@chakra-ui/react";
import { lazy, Suspense } from "react";

import { Loading } from "./components/common";
import { ErrorBoundary } from "./components/ErrorBoundary";
import { useView } from "./navigation";
import { ModelsPage } from "./pages/ModelsPage";

// The details pages (and the chart library) load only when opened: the Models table comes first.
const ModelPage = lazy(() => import("./pages/ModelPage").then((m) => ({ default: m.ModelPage })));
const RunPage = lazy(() => import("./pages/RunPage").then((m) => ({ default: m.RunPage })));
const ModelCardPage = lazy(() => import("./pages/ModelCardPage").then((m) => ({ default: m.ModelCardPage })));

export function App() {
  const [view, go] = useView();
  return (
    <Box p={4} minW="0" maxW="100%">
      <ErrorBoundary key={JSON.stringify(view)}>
        <Suspense fallback={<Loading what="the page" />}>
          {view.kind === "models" && <ModelsPage go={go} />}
          {view.kind === "model" && <ModelPage view={view} go={go} />}
          {view.kind === "run" && <RunPage view={view} go={go} />}
          {view.kind === "modelCard" && <ModelCardPage view={view} go={go} />}
        </Suspense>
      </ErrorBoundary>
    </Box>
  );
}
