import { StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { App } from "./App";
import { Providers } from "./components/Providers";
import { parseView } from "./format";
import { FIRST_MODELS_PAGE } from "./pages/ModelsPage";
import { modelOptions, modelSummariesOptions, permissionsOptions, runOptions, runsOptions } from "./queries";
import { createQueryClient } from "./queryClient";
import { followColorMode } from "./theme";

followColorMode();

const queryClient = createQueryClient();

// The page's first data is requested now, while the page's code is still loading.
const view = parseView(window.location.search);
if (view.kind === "models") void queryClient.prefetchQuery(modelSummariesOptions(FIRST_MODELS_PAGE));
if (view.kind !== "models" && view.modelId) {
  void queryClient.prefetchQuery(modelOptions(view.modelId));
  void queryClient.prefetchQuery(permissionsOptions(view.modelId));
  if (view.kind === "model") void queryClient.prefetchQuery(runsOptions(view.modelId, { limit: 25, offset: 0 }));
  if (view.kind === "run" && view.runId) void queryClient.prefetchQuery(runOptions(view.modelId, view.runId));
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <Providers client={queryClient}>
      <App />
    </Providers>
  </StrictMode>,
);
