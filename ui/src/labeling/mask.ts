// A segmentation mask being edited: one byte per pixel holding the label index (0 =
// background), as the platform stores it. Strokes paint discs along a line; every stroke is one
// undo step (its changed pixels and their old values), so undo/redo cost what the stroke cost.

import { decodeArea, encodeArea } from "./rle";

export interface LabelDef {
  id: string;
  name: string;
  index: number;
}

interface Change {
  pixels: Int32Array;
  before: Uint8Array;
  after: Uint8Array;
}

export class MaskEditor {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
  private undoStack: Change[] = [];
  private redoStack: Change[] = [];
  private open: Map<number, number> | null = null; // pixel -> value before the open stroke

  constructor(width: number, height: number, data?: Uint8Array) {
    this.width = width;
    this.height = height;
    this.data = data ? new Uint8Array(data) : new Uint8Array(width * height);
  }

  get canUndo(): boolean {
    return this.undoStack.length > 0;
  }

  get canRedo(): boolean {
    return this.redoStack.length > 0;
  }

  /** Start a stroke (one undo step) painting `value` (0: the eraser). */
  begin(): void {
    this.open = new Map();
  }

  /** Paint a disc of `radius` pixels at (x, y) in image coordinates. */
  dab(x: number, y: number, radius: number, value: number): void {
    const r = Math.max(0.5, radius);
    const x0 = Math.max(0, Math.floor(x - r));
    const x1 = Math.min(this.width - 1, Math.ceil(x + r));
    const y0 = Math.max(0, Math.floor(y - r));
    const y1 = Math.min(this.height - 1, Math.ceil(y + r));
    const r2 = r * r;
    for (let py = y0; py <= y1; py++) {
      for (let px = x0; px <= x1; px++) {
        const dx = px + 0.5 - x;
        const dy = py + 0.5 - y;
        if (dx * dx + dy * dy <= r2) this.set(py * this.width + px, value);
      }
    }
  }

  /** Paint discs along the segment from (x0, y0) to (x1, y1), half a radius apart. */
  line(x0: number, y0: number, x1: number, y1: number, radius: number, value: number): void {
    const length = Math.hypot(x1 - x0, y1 - y0);
    const steps = Math.max(1, Math.ceil(length / Math.max(0.5, radius / 2)));
    for (let s = 0; s <= steps; s++) {
      this.dab(x0 + ((x1 - x0) * s) / steps, y0 + ((y1 - y0) * s) / steps, radius, value);
    }
  }

  /** Close the open stroke; false when it changed nothing (no undo step then). */
  end(): boolean {
    const open = this.open;
    this.open = null;
    if (!open) return false;
    const changed = [...open.entries()].filter(([pixel, before]) => this.data[pixel] !== before);
    if (!changed.length) return false;
    this.push({
      pixels: Int32Array.from(changed.map(([p]) => p)),
      before: Uint8Array.from(changed.map(([, b]) => b)),
      after: Uint8Array.from(changed.map(([p]) => this.data[p])),
    });
    return true;
  }

  /** Replace the whole mask (clear, or a predicted mask accepted as a start): one undo step. */
  replace(next: Uint8Array): boolean {
    this.begin();
    for (let p = 0; p < this.data.length; p++) if (this.data[p] !== next[p]) this.set(p, next[p]);
    return this.end();
  }

  clear(): boolean {
    return this.replace(new Uint8Array(this.data.length));
  }

  undo(): boolean {
    const change = this.undoStack.pop();
    if (!change) return false;
    change.pixels.forEach((p, i) => (this.data[p] = change.before[i]));
    this.redoStack.push(change);
    return true;
  }

  redo(): boolean {
    const change = this.redoStack.pop();
    if (!change) return false;
    change.pixels.forEach((p, i) => (this.data[p] = change.after[i]));
    this.undoStack.push(change);
    return true;
  }

  /** Pixels per label index (background left out). */
  counts(): Map<number, number> {
    const found = new Map<number, number>();
    for (const v of this.data) if (v) found.set(v, (found.get(v) ?? 0) + 1);
    return found;
  }

  /** The reference label data (one RLE area per label present), for PUT .../label-file. */
  toAreas(labels: LabelDef[]): { id: string; rle: number[] }[] {
    const present = this.counts();
    return labels
      .filter((label) => present.has(label.index))
      .map((label) => ({ id: label.id, rle: encodeArea(this.data.length, (p) => this.data[p] === label.index) }));
  }

  /** A mask from reference label data (GET .../label-file). */
  static fromAreas(
    width: number,
    height: number,
    areas: { id: string; rle: number[] }[],
    labels: LabelDef[],
  ): MaskEditor {
    const editor = new MaskEditor(width, height);
    const byId = new Map(labels.map((l) => [l.id, l.index]));
    for (const area of areas) {
      const index = byId.get(area.id);
      if (index === undefined) continue; // a label the dataset retired
      decodeArea(area.rle, width * height).forEach((inside, p) => {
        if (inside) editor.data[p] = index;
      });
    }
    return editor;
  }

  private set(pixel: number, value: number): void {
    if (this.open && !this.open.has(pixel)) this.open.set(pixel, this.data[pixel]);
    this.data[pixel] = value;
  }

  private push(change: Change): void {
    this.undoStack.push(change);
    if (this.undoStack.length > 100) this.undoStack.shift();
    this.redoStack = [];
  }
}

/** Label indices of a greyscale/RGBA image's pixels (a predicted mask PNG decoded by a canvas:
 * the red channel holds the index), keeping only indices the dataset defines. */
export function maskFromPixels(rgba: Uint8ClampedArray, known: Set<number>): Uint8Array {
  const out = new Uint8Array(rgba.length / 4);
  for (let p = 0; p < out.length; p++) {
    const v = rgba[p * 4];
    out[p] = known.has(v) ? v : 0;
  }
  return out;
}

/** One distinct colour per label index (as `rgb(...)` parts), stable across pages. */
export const LABEL_COLOURS: [number, number, number][] = [
  [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
]; // fmt: skip

export function colourOf(index: number): [number, number, number] {
  return LABEL_COLOURS[(index - 1 + LABEL_COLOURS.length) % LABEL_COLOURS.length];
}

/** The mask as RGBA pixels for its overlay canvas (alpha = `opacity` x 255 where labelled). */
export function overlayPixels(data: Uint8Array, opacity: number, out: Uint8ClampedArray): void {
  const alpha = Math.round(Math.min(1, Math.max(0, opacity)) * 255);
  for (let p = 0; p < data.length; p++) {
    const v = data[p];
    if (v) {
      const [r, g, b] = colourOf(v);
      out[p * 4] = r;
      out[p * 4 + 1] = g;
      out[p * 4 + 2] = b;
      out[p * 4 + 3] = alpha;
    } else {
      out[p * 4 + 3] = 0;
    }
  }
}
