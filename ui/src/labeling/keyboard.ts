// The labelling page's keyboard shortcuts (also listed in the README and the page's help).

export type Action =
  | { type: "label"; index: number } // the n-th label of the dataset (1..9)
  | { type: "next" }
  | { type: "previous" }
  | { type: "saveDraft" }
  | { type: "confirm" }
  | { type: "tool"; tool: "brush" | "eraser" | "pan" }
  | { type: "brushSize"; delta: number }
  | { type: "undo" }
  | { type: "redo" }
  | { type: "fit" }
  | { type: "zoom"; factor: number }
  | { type: "acceptHint" }
  | { type: "close" };

export const SHORTCUTS: [string, string][] = [
  ["1 – 9", "pick the dataset's 1st – 9th label (classification: the class; segmentation: the brush's label)"],
  ["→ / J", "next example"],
  ["← / K", "previous example"],
  ["D", "save as draft"],
  ["Enter", "save as confirmed (then the next unlabelled example opens)"],
  ["B / E / Space", "brush / eraser / pan (hold Space and drag)"],
  ["[ / ]", "brush smaller / larger"],
  ["Ctrl+Z / Ctrl+Shift+Z (Ctrl+Y)", "undo / redo"],
  ["F", "fit the image"],
  ["+ / −", "zoom in / out"],
  ["H", "show the champion's prediction (hidden at first), then take it as a starting point"],
  ["Esc", "back to the grid"],
];

export interface KeyLike {
  key: string;
  ctrlKey?: boolean;
  metaKey?: boolean;
  shiftKey?: boolean;
  altKey?: boolean;
}

/** The action of a key press, or null (typing in a field is the caller's to skip). */
export function actionFor(event: KeyLike): Action | null {
  const mod = event.ctrlKey || event.metaKey;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (mod) {
    if (key === "z") return event.shiftKey ? { type: "redo" } : { type: "undo" };
    if (key === "y") return { type: "redo" };
    return null;
  }
  if (event.altKey) return null;
  if (/^[1-9]$/.test(key)) return { type: "label", index: Number(key) };
  switch (key) {
    case "ArrowRight":
    case "j":
      return { type: "next" };
    case "ArrowLeft":
    case "k":
      return { type: "previous" };
    case "d":
      return { type: "saveDraft" };
    case "Enter":
      return { type: "confirm" };
    case "b":
      return { type: "tool", tool: "brush" };
    case "e":
      return { type: "tool", tool: "eraser" };
    case " ":
      return { type: "tool", tool: "pan" };
    case "[":
      return { type: "brushSize", delta: -1 };
    case "]":
      return { type: "brushSize", delta: 1 };
    case "f":
      return { type: "fit" };
    case "+":
    case "=":
      return { type: "zoom", factor: 1.25 };
    case "-":
      return { type: "zoom", factor: 0.8 };
    case "h":
      return { type: "acceptHint" };
    case "Escape":
      return { type: "close" };
    default:
      return null;
  }
}

/** Whether a key press comes from a field the user types into (shortcuts then stay off). */
export function isTyping(target: EventTarget | null): boolean {
  const el = target as HTMLElement | null;
  if (!el || !el.tagName) return false;
  return el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName);
}

/** Brush radius steps of `[` / `]`. */
export const BRUSH_SIZES = [1, 2, 3, 5, 8, 12, 18, 27, 40];

export function nextBrushSize(current: number, delta: number): number {
  let i = BRUSH_SIZES.findIndex((s) => s >= current);
  if (i < 0) i = BRUSH_SIZES.length - 1;
  return BRUSH_SIZES[Math.min(BRUSH_SIZES.length - 1, Math.max(0, i + delta))];
}

/** Window/level of 8-bit grey pixels: `center` and `width` in 0..255 grey levels. */
export function windowLevel(src: Uint8ClampedArray, out: Uint8ClampedArray, center: number, width: number): void {
  const w = Math.max(1, width);
  const low = center - w / 2;
  const lut = new Uint8ClampedArray(256);
  for (let v = 0; v < 256; v++) lut[v] = ((v - low) / w) * 255;
  for (let i = 0; i < src.length; i += 4) {
    out[i] = lut[src[i]];
    out[i + 1] = lut[src[i + 1]];
    out[i + 2] = lut[src[i + 2]];
    out[i + 3] = src[i + 3];
  }
}
