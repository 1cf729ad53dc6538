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

// Airflow's UI is Chakra v3 too, with its own palette: its semantic colours (CSS variables of
// the same names) are copied onto this page, so surfaces, text and borders match exactly.
export const SHARED_TOKENS = [
  "bg", "bg-panel", "bg-subtle", "bg-muted", "bg-emphasized",
  "fg", "fg-muted", "fg-subtle", "fg-info", "fg-success", "fg-error",
  "border", "border-muted", "border-subtle", "border-emphasized",
].map((name) => `--chakra-colors-${name}`);

function apply(mode: ColorMode): void {
  const html = document.documentElement;
  html.classList.toggle("dark", mode === "dark");
  html.classList.toggle("light", mode === "light");
  html.style.colorScheme = mode;
  const root = parentRoot();
  if (!root) return;
  const theirs = window.parent.getComputedStyle(root);
  for (const name of SHARED_TOKENS) {
    const value = theirs.getPropertyValue(name).trim();
    if (value) html.style.setProperty(name, value);
    else html.style.removeProperty(name);
  }
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
