import { StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { prefetch } from "./api";
import { App } from "./App";
import { Providers } from "./components/Providers";
import { parseView } from "./format";
import { FIRST_MODELS_PAGE } from "./pages/ModelsPage";
import { modelSummariesOptions } from "./queries";
import { createQueryClient } from "./queryClient";
import { followColorMode } from "./theme";

followColorMode();

const queryClient = createQueryClient();

// The page's first data is requested now, while the page's code is still loading.
const view = parseView(window.location.search);
if (view.kind === "models") void queryClient.prefetchQuery(modelSummariesOptions(FIRST_MODELS_PAGE));
if (view.kind !== "models" && view.modelId) {
  prefetch(`/models/${view.modelId}`);
  prefetch(`/models/${view.modelId}/permissions`);
  if (view.kind === "model") prefetch(`/models/${view.modelId}/runs`, { limit: 25, offset: 0 });
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <Providers client={queryClient}>
      <App />
    </Providers>
  </StrictMode>,
);
