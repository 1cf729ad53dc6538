// The image viewer of the labelling page: zoom (wheel, + / −), pan (drag with the pan tool, the
// middle button or Space held), fit, window/level of the grey levels, and the mask overlay that
// the brush and the eraser paint (segmentation).

import { Box } from "@chakra-ui/react";
import { useCallback, useEffect, useImperativeHandle, useRef, useState, type Ref } from "react";

import { windowLevel } from "./keyboard";
import { type MaskEditor, overlayPixels } from "./mask";

export type Tool = "brush" | "eraser" | "pan";

export interface ViewerHandle {
  fit: () => void;
  zoom: (factor: number) => void;
  redrawMask: () => void;
}

export interface ViewerProps {
  image: HTMLImageElement;
  editor?: MaskEditor | null;
  hint?: Uint8Array | null; // a predicted mask shown (not editable) until accepted
  opacity: number;
  tool: Tool;
  brushSize: number;
  brushValue: number; // the label index the brush paints
  center: number; // window/level, 0..255 grey levels
  width: number;
  onStroke?: () => void;
  handle?: Ref<ViewerHandle>;
  height?: string;
}

/** How much "fit" enlarges an image at most: a 64×64 tile is shown at 256 px, not blown up to
 * the whole box as big blocks (issue 31); zoom (+, wheel) still goes further on purpose. */
export const MAX_FIT_SCALE = 4;

/** The scale that fits an image into a box: shrink as needed, enlarge at most MAX_FIT_SCALE×. */
export function fitScale(boxWidth: number, boxHeight: number, imageWidth: number, imageHeight: number): number {
  const fits = Math.min(boxWidth / imageWidth, boxHeight / imageHeight);
  return Math.min(fits, Math.max(1, MAX_FIT_SCALE));
}

/** The viewer's height: the window's height less the page above it (so the label keys and Save
 * beside it, and the tools under it, stay in view at 1280×900), between 320 and 640 px. */
export const VIEWER_HEIGHT = "clamp(320px, calc(100vh - 300px), 640px)";

interface Transform {
  scale: number;
  x: number; // screen position of the image's top-left corner
  y: number;
}

export function Viewer(props: ViewerProps) {
  const { image, editor, hint, opacity, tool, brushSize, brushValue, center, width, onStroke } = props;
  const canvas = useRef<HTMLCanvasElement>(null);
  const box = useRef<HTMLDivElement>(null);
  const [view, setView] = useState<Transform>({ scale: 1, x: 0, y: 0 });
  const [spaceHeld, setSpaceHeld] = useState(false);
  const [cursor, setCursor] = useState<{ x: number; y: number } | null>(null);
  const [maskTick, setMaskTick] = useState(0);
  const drag = useRef<{ mode: "pan" | "paint"; lastX: number; lastY: number } | null>(null);

  // The image with window/level applied, and the overlays, each on an offscreen canvas.
  const shown = useRef<HTMLCanvasElement | null>(null);
  const source = useRef<ImageData | null>(null);
  const overlay = useRef<HTMLCanvasElement | null>(null);
  const hintLayer = useRef<HTMLCanvasElement | null>(null);

  useEffect(() => {
    const c = document.createElement("canvas");
    c.width = image.naturalWidth;
    c.height = image.naturalHeight;
    const ctx = c.getContext("2d")!;
    ctx.drawImage(image, 0, 0);
    source.current = ctx.getImageData(0, 0, c.width, c.height);
    shown.current = c;
  }, [image]);

  useEffect(() => {
    const c = shown.current;
    if (!c || !source.current) return;
    const out = new ImageData(c.width, c.height);
    windowLevel(source.current.data, out.data, center, width);
    c.getContext("2d")!.putImageData(out, 0, 0);
    draw();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [image, center, width]);

  const paintLayer = (data: Uint8Array | null | undefined, layer: { current: HTMLCanvasElement | null }, alpha: number) => {
    if (!data) {
      layer.current = null;
      return;
    }
    const c = layer.current ?? document.createElement("canvas");
    c.width = image.naturalWidth;
    c.height = image.naturalHeight;
    const pixels = new ImageData(c.width, c.height);
    overlayPixels(data, alpha, pixels.data);
    c.getContext("2d")!.putImageData(pixels, 0, 0);
    layer.current = c;
  };

  useEffect(() => {
    paintLayer(editor?.data, overlay, opacity);
    draw();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [editor, opacity, maskTick, image]);

  useEffect(() => {
    paintLayer(hint, hintLayer, Math.min(0.6, opacity));
    draw();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [hint, opacity, image]);

  const fit = useCallback(() => {
    const c = canvas.current;
    if (!c) return;
    const scale = fitScale(c.width, c.height, image.naturalWidth, image.naturalHeight);
    setView({ scale, x: (c.width - image.naturalWidth * scale) / 2, y: (c.height - image.naturalHeight * scale) / 2 });
  }, [image]);

  const zoomAt = useCallback((factor: number, sx?: number, sy?: number) => {
    const c = canvas.current;
    if (!c) return;
    const px = sx ?? c.width / 2;
    const py = sy ?? c.height / 2;
    setView((v) => {
      const scale = Math.min(64, Math.max(0.05, v.scale * factor));
      const k = scale / v.scale;
      return { scale, x: px - (px - v.x) * k, y: py - (py - v.y) * k };
    });
  }, []);

  useImperativeHandle(props.handle, () => ({
    fit,
    zoom: (factor: number) => zoomAt(factor),
    redrawMask: () => setMaskTick((t) => t + 1),
  }));

  // Size the canvas to its box (device pixels = CSS pixels: the image is scaled by `view`).
  useEffect(() => {
    const resize = () => {
      const c = canvas.current;
      const b = box.current;
      if (!c || !b) return;
      c.width = b.clientWidth;
      c.height = b.clientHeight;
      fit();
    };
    resize();
    const observer = new ResizeObserver(resize);
    if (box.current) observer.observe(box.current);
    return () => observer.disconnect();
  }, [fit]);

  function draw() {
    const c = canvas.current;
    if (!c || !shown.current) return;
    const ctx = c.getContext("2d")!;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.imageSmoothingEnabled = view.scale < 1;
    ctx.setTransform(view.scale, 0, 0, view.scale, view.x, view.y);
    ctx.drawImage(shown.current, 0, 0);
    ctx.imageSmoothingEnabled = false;
    if (hintLayer.current) ctx.drawImage(hintLayer.current, 0, 0);
    if (overlay.current) ctx.drawImage(overlay.current, 0, 0);
    if (cursor && editor && tool !== "pan" && !spaceHeld) {
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.beginPath();
      ctx.arc(cursor.x, cursor.y, Math.max(1, brushSize * view.scale), 0, Math.PI * 2);
      ctx.strokeStyle = tool === "eraser" ? "rgba(255,255,255,0.9)" : "rgba(255,255,0,0.9)";
      ctx.lineWidth = 1;
      ctx.stroke();
    }
  }

  useEffect(draw);

  useEffect(() => {
    const down = (e: KeyboardEvent) => e.key === " " && setSpaceHeld(true);
    const up = (e: KeyboardEvent) => e.key === " " && setSpaceHeld(false);
    window.addEventListener("keydown", down);
    window.addEventListener("keyup", up);
    return () => {
      window.removeEventListener("keydown", down);
      window.removeEventListener("keyup", up);
    };
  }, []);

  // Wheel zoom at the cursor (a native listener: React's is passive and cannot stop the page
  // from scrolling).
  useEffect(() => {
    const c = canvas.current;
    if (!c) return;
    const onWheel = (e: WheelEvent) => {
      e.preventDefault();
      const rect = c.getBoundingClientRect();
      zoomAt(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - rect.left, e.clientY - rect.top);
    };
    c.addEventListener("wheel", onWheel, { passive: false });
    return () => c.removeEventListener("wheel", onWheel);
  }, [zoomAt]);

  const toImage = (sx: number, sy: number) => ({ x: (sx - view.x) / view.scale, y: (sy - view.y) / view.scale });
  const local = (e: React.PointerEvent) => {
    const rect = canvas.current!.getBoundingClientRect();
    return { x: e.clientX - rect.left, y: e.clientY - rect.top };
  };

  const onPointerDown = (e: React.PointerEvent<HTMLCanvasElement>) => {
    const at = local(e);
    const panning = tool === "pan" || spaceHeld || e.button === 1 || !editor;
    drag.current = { mode: panning ? "pan" : "paint", lastX: at.x, lastY: at.y };
    e.currentTarget.setPointerCapture(e.pointerId);
    if (!panning && editor) {
      const p = toImage(at.x, at.y);
      editor.begin();
      editor.dab(p.x, p.y, brushSize, tool === "eraser" ? 0 : brushValue);
      setMaskTick((t) => t + 1);
    }
  };
  const onPointerMove = (e: React.PointerEvent<HTMLCanvasElement>) => {
    const at = local(e);
    setCursor(at);
    const d = drag.current;
    if (!d) return;
    if (d.mode === "pan") {
      setView((v) => ({ ...v, x: v.x + at.x - d.lastX, y: v.y + at.y - d.lastY }));
    } else if (editor) {
      const a = toImage(d.lastX, d.lastY);
      const b = toImage(at.x, at.y);
      editor.line(a.x, a.y, b.x, b.y, brushSize, tool === "eraser" ? 0 : brushValue);
      setMaskTick((t) => t + 1);
    }
    d.lastX = at.x;
    d.lastY = at.y;
  };
  const onPointerUp = () => {
    const d = drag.current;
    drag.current = null;
    if (d?.mode === "paint" && editor && editor.end()) onStroke?.();
  };

  return (
    <Box
      ref={box}
      position="relative"
      h={props.height ?? VIEWER_HEIGHT}
      bg="bg.emphasized"
      borderWidth="1px"
      borderColor="border"
      rounded="md"
      overflow="hidden"
    >
      <canvas
        ref={canvas}
        data-testid="label-canvas"
        data-scale={view.scale}
        data-image-width={image.naturalWidth}
        data-offset-x={view.x}
        data-offset-y={view.y}
        aria-label="Image being labelled: wheel zooms, drag pans or paints"
        style={{ display: "block", touchAction: "none", cursor: tool === "pan" || spaceHeld || !editor ? "grab" : "crosshair" }}
        onPointerDown={onPointerDown}
        onPointerMove={onPointerMove}
        onPointerUp={onPointerUp}
        onPointerLeave={() => setCursor(null)}
      />
    </Box>
  );
}
