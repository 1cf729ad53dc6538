import { ChakraProvider } from "@chakra-ui/react";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { prefetch } from "./api";
import { App } from "./App";
import { parseView } from "./format";
import { FIRST_MODELS_PAGE } from "./pages/ModelsPage";
import { followColorMode, system } from "./theme";

followColorMode();

// The page's first data is requested now, while the page's code is still loading.
const view = parseView(window.location.search);
if (view.kind === "models") prefetch("/model-summaries", FIRST_MODELS_PAGE);
if (view.kind !== "models" && view.modelId) {
  prefetch(`/models/${view.modelId}`);
  prefetch(`/models/${view.modelId}/permissions`);
  if (view.kind === "model") prefetch(`/models/${view.modelId}/runs`, { limit: 25, offset: 0 });
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <ChakraProvider value={system}>
      <App />
    </ChakraProvider>
  </StrictMode>,
);
