// Looks like Airflow's own pages: Chakra UI v3 (Airflow's component library) with the colour
// mode of the Airflow page around the iframe (its <html> has class "light" or "dark").

import { createSystem, defaultConfig, defineConfig } from "@chakra-ui/react";

const config = defineConfig({
  theme: {
    tokens: {
      fonts: {
        body: { value: "Inter, ui-sans-serif, system-ui, -apple-system, 'Segoe UI', sans-serif" },
        heading: { value: "Inter, ui-sans-serif, system-ui, -apple-system, 'Segoe UI', sans-serif" },
      },
    },
  },
  globalCss: {
    // Transparent: Airflow's own page background shows through the iframe (light and dark).
    "html, body": { bg: "transparent", color: "fg" },
  },
});

export const system = createSystem(defaultConfig, config);

export type ColorMode = "light" | "dark";

function parentRoot(): HTMLElement | null {
  try {
    if (window.parent !== window) return window.parent.document.documentElement;
  } catch {
    /* another origin: not Airflow's page */
  }
  return null;
}

export function currentColorMode(): ColorMode {
  const root = parentRoot();
  if (root) return root.classList.contains("dark") ? "dark" : "light";
  return window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function apply(mode: ColorMode): void {
  const html = document.documentElement;
  html.classList.toggle("dark", mode === "dark");
  html.classList.toggle("light", mode === "light");
  html.style.colorScheme = mode;
}

/** Follow Airflow's colour mode now and whenever the user switches it. */
export function followColorMode(): () => void {
  apply(currentColorMode());
  const root = parentRoot();
  if (!root) return () => undefined;
  const observer = new MutationObserver(() => apply(currentColorMode()));
  observer.observe(root, { attributes: true, attributeFilter: ["class", "style"] });
  return () => observer.disconnect();
}
