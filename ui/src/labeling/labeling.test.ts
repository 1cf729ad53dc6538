import { describe, expect, it } from "vitest";

import { actionFor, isTyping, nextBrushSize, windowLevel } from "./keyboard";
import { MaskEditor, overlayPixels } from "./mask";
import { decodeArea, encodeArea } from "./rle";

const LABELS = [
  { id: "nucleus", name: "nucleus", index: 1 },
  { id: "membrane", name: "membrane", index: 2 },
];

describe("RLE (the reference brush format)", () => {
  it("encodes the same bytes as the Python encoder", () => {
    // labels/rle.py: encode(np.repeat([[255], [0], [0]] * 4 ...)) of a 3-pixel area [1, 0, 0]
    // counts: 12 values; runs of 4 x 255 and 8 x 0 (values, not pixels)
    const bytes = encodeArea(3, (p) => p === 0);
    const bits = bytes.map((b) => b.toString(2).padStart(8, "0")).join("");
    const expected =
      (12).toString(2).padStart(32, "0") + "00111" + "0010" + "0011" + "0111" + "1111" +
      "100" + "011" + "11111111" + // run of 4 x 255
      "100" + "111" + "00000000"; // run of 8 x 0
    expect(bits.slice(0, expected.length)).toBe(expected);
    expect(bits.length % 8).toBe(0);
    expect(bits.slice(expected.length)).toMatch(/^0{1,8}$/);
  });

  it("round-trips areas of every run length", () => {
    const pixels = 70_001;
    const inside = (p: number) => (p > 10 && p < 20) || (p > 100 && p < 69_000) || p === 70_000;
    const decoded = decodeArea(encodeArea(pixels, inside), pixels);
    const wrong = [...decoded].findIndex((v, p) => v !== (inside(p) ? 1 : 0));
    expect(wrong).toBe(-1);
  });

  it("refuses an RLE of another size", () => {
    expect(() => decodeArea(encodeArea(4, () => true), 5)).toThrow(/holds 16 values/);
  });
});

describe("MaskEditor", () => {
  it("paints, erases, undoes and redoes one stroke at a time", () => {
    const mask = new MaskEditor(20, 10);
    mask.begin();
    mask.line(2, 5, 12, 5, 1.5, 1);
    expect(mask.end()).toBe(true);
    expect(mask.data[5 * 20 + 7]).toBe(1);
    expect(mask.data[0]).toBe(0);
    const painted = mask.counts().get(1)!;
    mask.begin();
    mask.dab(7.5, 5.5, 1, 0); // the eraser
    mask.end();
    expect(mask.data[5 * 20 + 7]).toBe(0);
    expect(mask.counts().get(1)).toBeLessThan(painted);
    expect(mask.undo()).toBe(true);
    expect(mask.counts().get(1)).toBe(painted);
    expect(mask.redo()).toBe(true);
    expect(mask.data[5 * 20 + 7]).toBe(0);
    mask.begin();
    expect(mask.end()).toBe(false); // nothing changed: no undo step
    expect(mask.clear()).toBe(true);
    expect(mask.counts().size).toBe(0);
    mask.undo();
    expect(mask.counts().get(1)).toBeGreaterThan(0);
    expect(mask.canRedo).toBe(true);
  });

  it("keeps paint inside the image", () => {
    const mask = new MaskEditor(4, 4);
    mask.begin();
    mask.dab(-3, -3, 5, 2);
    mask.end();
    expect(mask.data[0]).toBe(2);
    expect(mask.data.length).toBe(16);
  });

  it("encodes each label as one area and reads it back", () => {
    const mask = new MaskEditor(6, 3);
    mask.replace(Uint8Array.from([0, 1, 1, 0, 2, 2, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 0]));
    const areas = mask.toAreas(LABELS);
    expect(areas.map((a) => a.id)).toEqual(["nucleus", "membrane"]);
    const back = MaskEditor.fromAreas(6, 3, areas, LABELS);
    expect([...back.data]).toEqual([...mask.data]);
    expect(MaskEditor.fromAreas(6, 3, [{ id: "retired", rle: areas[0].rle }], LABELS).counts().size).toBe(0);
  });

  it("colours the overlay per label with the chosen opacity", () => {
    const out = new Uint8ClampedArray(8);
    overlayPixels(Uint8Array.from([0, 2]), 0.5, out);
    expect(out[3]).toBe(0);
    expect(out[7]).toBe(128);
    expect([out[4], out[5], out[6]]).toEqual([60, 180, 75]);
  });
});

describe("keyboard map", () => {
  it("maps the shortcuts", () => {
    expect(actionFor({ key: "3" })).toEqual({ type: "label", index: 3 });
    expect(actionFor({ key: "0" })).toBeNull();
    expect(actionFor({ key: "ArrowRight" })).toEqual({ type: "next" });
    expect(actionFor({ key: "K" })).toEqual({ type: "previous" });
    expect(actionFor({ key: "Enter" })).toEqual({ type: "confirm" });
    expect(actionFor({ key: "d" })).toEqual({ type: "saveDraft" });
    expect(actionFor({ key: "z", ctrlKey: true })).toEqual({ type: "undo" });
    expect(actionFor({ key: "Z", ctrlKey: true, shiftKey: true })).toEqual({ type: "redo" });
    expect(actionFor({ key: "y", metaKey: true })).toEqual({ type: "redo" });
    expect(actionFor({ key: "d", ctrlKey: true })).toBeNull(); // the browser's own
    expect(actionFor({ key: "]" })).toEqual({ type: "brushSize", delta: 1 });
    expect(actionFor({ key: "e" })).toEqual({ type: "tool", tool: "eraser" });
    expect(actionFor({ key: "h" })).toEqual({ type: "acceptHint" });
  });

  it("stays off while typing and steps the brush size", () => {
    const input = document.createElement("input");
    expect(isTyping(input)).toBe(true);
    expect(isTyping(document.createElement("div"))).toBe(false);
    expect(nextBrushSize(5, 1)).toBe(8);
    expect(nextBrushSize(5, -1)).toBe(3);
    expect(nextBrushSize(40, 1)).toBe(40);
    expect(nextBrushSize(1, -1)).toBe(1);
  });

  it("applies window/level", () => {
    const src = Uint8ClampedArray.from([0, 0, 0, 255, 100, 100, 100, 255, 200, 200, 200, 255]);
    const out = new Uint8ClampedArray(12);
    windowLevel(src, out, 100, 100); // 50..150 → 0..255
    expect([out[0], out[4], out[8]]).toEqual([0, 128, 255]);
    expect(out[3]).toBe(255);
  });
});
