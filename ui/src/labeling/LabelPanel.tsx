// One example being labelled: the viewer, the label tools (classification: a class; segmentation:
// brush, eraser, opacity, undo/redo, clear), the champion's prediction as a hint, save as draft or
// confirmed (refused when someone else saved meanwhile), its FHIR identifiers and label history.

import { Alert, Badge, Box, Button, Code, Flex, Grid, Heading, HStack, Kbd, Stack, Table, Text } from "@chakra-ui/react";
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";

import { ApiError, type Model } from "../api";
import { ErrorAlert, Loading } from "../components/common";
import { formatTime } from "../format";
import {
  type DatasetInfo,
  decodeMaskPng,
  type ExampleItem,
  type Filters,
  getExample,
  getHint,
  getLabelFile,
  type Hint,
  listExamples,
  markerAfter,
  nextWithStatus,
  previewUrl,
  saveClassLabel,
  saveMaskLabel,
} from "./examplesApi";
import { actionFor, isTyping, nextBrushSize, SHORTCUTS } from "./keyboard";
import { colourOf, MaskEditor } from "./mask";
import { fitScale, MAX_FIT_SCALE, type Tool, Viewer, type ViewerHandle } from "./Viewer";

interface Props {
  dataset: DatasetInfo;
  model: Model;
  mayEdit: boolean;
  user: string;
  exampleId: string;
  filters: Filters;
  pageIds: string[];
  onOpen: (id: string) => void;
  onClose: () => void;
}

interface Loaded {
  example: ExampleItem;
  image: HTMLImageElement;
  editor: MaskEditor | null;
}

async function load(dataset: DatasetInfo, exampleId: string): Promise<Loaded> {
  const image = new Image();
  image.src = previewUrl(dataset.id, exampleId);
  const [example] = await Promise.all([getExample(dataset.id, exampleId), image.decode()]);
  let editor: MaskEditor | null = null;
  if (dataset.problemDefinition.problemType === "imgSeg") {
    const labels = dataset.problemDefinition.labelDefinition.labels;
    const file = example.label?.mask ? (await getLabelFile(dataset.id, exampleId)).labelData : null;
    editor = file
      ? MaskEditor.fromAreas(file.width, file.height, file.areas, labels)
      : new MaskEditor(image.naturalWidth, image.naturalHeight);
  }
  return { example, image, editor };
}

export function LabelPanel(props: Props) {
  const { dataset, exampleId } = props;
  const [loaded, setLoaded] = useState<Loaded | null>(null);
  const [loadError, setLoadError] = useState<Error | null>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setLoadError(null);
    load(dataset, exampleId).then(
      (l) => live && setLoaded(l),
      (e: Error) => live && setLoadError(e),
    );
    return () => {
      live = false;
    };
  }, [dataset, exampleId, tick]);
  if (loadError) {
    return (
      <Box>
        <Button size="sm" variant="outline" mb={3} onClick={props.onClose}>
          ← Back to the examples
        </Button>
        <ErrorAlert error={loadError} title={`Example ${exampleId} cannot be opened`} />
      </Box>
    );
  }
  if (!loaded || loaded.example.id !== exampleId) return <Loading what={`example ${exampleId}`} />;
  return <Labeling key={`${exampleId}-${tick}`} {...props} loaded={loaded} reload={() => setTick((t) => t + 1)} />;
}

function Labeling({ dataset, model, mayEdit, user, filters, pageIds, onOpen, onClose, loaded, reload }: Props & { loaded: Loaded; reload: () => void }) {
  const { example, image, editor } = loaded;
  const labels = useMemo(
    () => [...dataset.problemDefinition.labelDefinition.labels].sort((a, b) => a.index - b.index),
    [dataset],
  );
  const segmentation = dataset.problemDefinition.problemType === "imgSeg";
  const [chosen, setChosen] = useState<number | undefined>(example.label?.classes?.[0]);
  const [brushLabel, setBrushLabel] = useState(labels[0]?.index ?? 1);
  const [tool, setTool] = useState<Tool>("brush");
  const [brushSize, setBrushSize] = useState(5);
  const [opacity, setOpacity] = useState(0.5);
  const [center, setCenter] = useState(128);
  const [width, setWidth] = useState(256);
  const [, setEdits] = useState(0);
  const [saving, setSaving] = useState(false);
  const [error, setError] = useState<Error | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [hint, setHint] = useState<Hint | null>(null);
  const [hintMask, setHintMask] = useState<Uint8Array | null>(null);
  const [hintError, setHintError] = useState<Error | null>(null);
  // Hidden until asked for: a reader who sees the model's answer first is anchored by it.
  const [showHint, setShowHint] = useState(false);
  const viewer = useRef<ViewerHandle>(null);
  const edited = () => {
    setEdits((n) => n + 1);
    viewer.current?.redrawMask();
  };

  // The champion's prediction, when the model has one deployed (a hint, never saved by itself).
  useEffect(() => {
    if (!model.championId) return;
    let live = true;
    getHint(dataset.id, example.id, model.id).then(
      async (h) => {
        if (!live) return;
        setHint(h);
        if (h.mask) {
          const known = new Set(labels.map((l) => l.index));
          const decoded = await decodeMaskPng(h.mask, image.naturalWidth, image.naturalHeight, known);
          if (live) setHintMask(decoded);
        }
      },
      (e: Error) => live && setHintError(e),
    );
    return () => {
      live = false;
    };
  }, [dataset.id, example.id, model.id, model.championId, image, labels]);

  const acceptHint = () => {
    if (!showHint) {
      setShowHint(true); // H shows the hint first; a second H takes it
      return;
    }
    if (segmentation && hintMask && editor) {
      editor.replace(hintMask);
      setShowHint(false);
      edited();
      setNotice("The predicted mask is now your starting point: edit it, then save.");
    } else if (!segmentation && hint?.predictions?.length) {
      // the label at the champion's operating point (`value`), else the most confident one
      setChosen((hint.predictions.find((p) => p.value) ?? hint.predictions[0]).index);
    }
  };

  const goNext = async () => {
    const at = pageIds.indexOf(example.id);
    if (at >= 0 && at + 1 < pageIds.length) return onOpen(pageIds[at + 1]);
    const after = await listExamples(dataset.id, filters, 1, markerAfter(example.id));
    if (after.examples.length) onOpen(after.examples[0].id);
    else setNotice("This is the last example of these filters.");
  };
  const goPrevious = () => {
    const at = pageIds.indexOf(example.id);
    if (at > 0) onOpen(pageIds[at - 1]);
  };

  const save = async (confirmed: boolean) => {
    if (!mayEdit || saving) return;
    setError(null);
    setNotice(null);
    if (!segmentation && chosen === undefined) {
      setError(new Error("Pick a label first (keys 1–9)."));
      return;
    }
    setSaving(true);
    try {
      if (segmentation && editor) {
        await saveMaskLabel(dataset.id, example, { width: editor.width, height: editor.height }, editor.toAreas(labels), confirmed);
      } else {
        await saveClassLabel(dataset.id, example, chosen!, confirmed);
      }
      const next = await nextWithStatus(dataset.id, { ...filters, status: undefined }, example.id, "unlabeled");
      if (next) onOpen(next);
      else {
        setNotice("Saved. Every example of these filters has a label now.");
        reload();
      }
    } catch (e) {
      setError(e as Error);
    } finally {
      setSaving(false);
    }
  };

  const onKey = useCallback(
    (e: KeyboardEvent) => {
      if (isTyping(e.target)) return;
      const action = actionFor(e);
      if (!action) return;
      switch (action.type) {
        case "label": {
          const label = labels[action.index - 1];
          if (!label) return;
          if (segmentation) {
            setBrushLabel(label.index);
            setTool("brush");
          } else setChosen(label.index);
          break;
        }
        case "next":
          void goNext();
          break;
        case "previous":
          goPrevious();
          break;
        case "saveDraft":
          void save(false);
          break;
        case "confirm":
          void save(true);
          break;
        case "tool":
          if (action.tool !== "pan") setTool(action.tool);
          else return; // Space: held to pan (the viewer handles it)
          break;
        case "brushSize":
          setBrushSize((s) => nextBrushSize(s, action.delta));
          break;
        case "undo":
          if (editor?.undo()) edited();
          break;
        case "redo":
          if (editor?.redo()) edited();
          break;
        case "fit":
          viewer.current?.fit();
          break;
        case "zoom":
          viewer.current?.zoom(action.factor);
          break;
        case "acceptHint":
          acceptHint();
          break;
        case "close":
          onClose();
          break;
      }
      e.preventDefault();
    },
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [labels, segmentation, editor, chosen, hint, hintMask, saving, example, showHint],
  );
  // A layout effect: the shortcuts listen from the moment the example is on screen (a passive
  // effect runs after the paint, later still on a busy page, and a key pressed at once was lost).
  useLayoutEffect(() => {
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onKey]);

  const conflict = error instanceof ApiError && error.status === 409;
  const history = example.labelHistory ?? [];
  return (
    <Box data-testid="label-panel">
      <Flex align="center" gap={3} mb={3} wrap="wrap">
        <Button size="sm" variant="outline" onClick={onClose}>
          ← Examples
        </Button>
        <Heading as="h2" size="md" fontFamily="mono" data-testid="example-title">
          {example.id}
        </Heading>
        <Badge colorPalette={example.status === "confirmed" ? "green" : example.status === "draft" ? "orange" : "gray"} data-testid="example-status">
          {example.status === "confirmed" ? "labeled" : example.status}
          {example.labelName ? ` · ${example.labelName}` : ""}
        </Badge>
        {example.conflict && <Badge colorPalette="red">confirmed labels disagree</Badge>}
        <Box flex="1" />
        <Button size="sm" variant="outline" onClick={goPrevious} disabled={pageIds.indexOf(example.id) <= 0}>
          ← Previous
        </Button>
        <Button size="sm" variant="outline" onClick={() => void goNext()}>
          Next →
        </Button>
      </Flex>
      {error && (
        <Box mb={3}>
          <ErrorAlert error={error} title={conflict ? "Someone else saved this example meanwhile" : "The label was not saved"} />
          {conflict && (
            <Button size="xs" mt={2} variant="outline" onClick={reload}>
              Show the current label
            </Button>
          )}
        </Box>
      )}
      {notice && (
        <Alert.Root status="info" mb={3}>
          <Alert.Indicator />
          <Alert.Description>{notice}</Alert.Description>
        </Alert.Root>
      )}
      {!mayEdit && (
        <Alert.Root status="warning" mb={3}>
          <Alert.Indicator />
          <Alert.Description>{user} may look at the examples but not label them (Airflow role without DAG edit).</Alert.Description>
        </Alert.Root>
      )}
      <Grid templateColumns={{ base: "1fr", md: "minmax(0, 1fr) 300px" }} gap={4} data-testid="label-layout">
        <Box>
          <Viewer
            image={image}
            editor={editor}
            hint={showHint && segmentation ? hintMask : null}
            opacity={opacity}
            tool={tool}
            brushSize={brushSize}
            brushValue={brushLabel}
            center={center}
            width={width}
            onStroke={edited}
            handle={viewer}
          />
          <Flex gap={4} mt={2} wrap="wrap" align="center" fontSize="sm">
            <Slider label="Level" value={center} min={0} max={255} onChange={setCenter} />
            <Slider label="Window" value={width} min={1} max={512} onChange={setWidth} />
            <Button size="xs" variant="ghost" onClick={() => { setCenter(128); setWidth(256); }}>
              Reset
            </Button>
            <Button size="xs" variant="ghost" onClick={() => viewer.current?.fit()}>
              Fit (F)
            </Button>
            <Button size="xs" variant="ghost" onClick={() => viewer.current?.zoom(1.25)}>
              Zoom in (+)
            </Button>
            <Button size="xs" variant="ghost" onClick={() => viewer.current?.zoom(0.8)}>
              Zoom out (−)
            </Button>
            <Text color="fg.muted" data-testid="image-size">
              {image.naturalWidth} × {image.naturalHeight} px
              {fitScale(1e9, 1e9, image.naturalWidth, image.naturalHeight) > 1 ? ` (a small image: fit enlarges it at most ${MAX_FIT_SCALE}×)` : ""}
            </Text>
          </Flex>
        </Box>
        <Stack gap={3}>
          <Box>
            <Heading as="h3" size="sm" mb={1}>
              {segmentation ? "Brush label" : "Label"}
            </Heading>
            <Stack gap={1} data-testid="label-choices">
              {labels.map((label, i) => {
                const active = segmentation ? brushLabel === label.index : chosen === label.index;
                const [r, g, b] = colourOf(label.index);
                return (
                  <Button
                    key={label.id}
                    size="sm"
                    justifyContent="flex-start"
                    variant={active ? "solid" : "outline"}
                    colorPalette={active ? "blue" : "gray"}
                    aria-pressed={active}
                    onClick={() => (segmentation ? setBrushLabel(label.index) : setChosen(label.index))}
                  >
                    {i < 9 && <Kbd size="sm">{i + 1}</Kbd>}
                    {segmentation && <Box w="12px" h="12px" rounded="sm" bg={`rgb(${r},${g},${b})`} />}
                    {label.name}
                  </Button>
                );
              })}
            </Stack>
          </Box>
          <HStack gap={2} data-testid="save-buttons">
            <Button size="sm" variant="outline" loading={saving} disabled={!mayEdit} onClick={() => void save(false)} data-testid="save-draft">
              Save draft (D)
            </Button>
            <Button size="sm" colorPalette="blue" loading={saving} disabled={!mayEdit} onClick={() => void save(true)} data-testid="save-confirmed">
              Confirm (Enter)
            </Button>
          </HStack>
          {segmentation && editor && (
            <Box data-testid="mask-tools">
              <Heading as="h3" size="sm" mb={2}>
                Mask
              </Heading>
              <HStack gap={1} mb={2} wrap="wrap">
                <Button size="xs" variant={tool === "brush" ? "solid" : "outline"} onClick={() => setTool("brush")}>
                  Brush (B)
                </Button>
                <Button size="xs" variant={tool === "eraser" ? "solid" : "outline"} onClick={() => setTool("eraser")}>
                  Eraser (E)
                </Button>
                <Button size="xs" variant={tool === "pan" ? "solid" : "outline"} onClick={() => setTool("pan")}>
                  Pan
                </Button>
              </HStack>
              <Slider label={`Size ${brushSize}px`} value={brushSize} min={1} max={40} onChange={setBrushSize} />
              <Slider label={`Opacity ${Math.round(opacity * 100)}%`} value={Math.round(opacity * 100)} min={0} max={100} onChange={(v) => setOpacity(v / 100)} />
              <HStack gap={1} mt={2}>
                <Button size="xs" variant="outline" disabled={!editor.canUndo} onClick={() => editor.undo() && edited()}>
                  Undo
                </Button>
                <Button size="xs" variant="outline" disabled={!editor.canRedo} onClick={() => editor.redo() && edited()}>
                  Redo
                </Button>
                <Button size="xs" variant="outline" colorPalette="red" onClick={() => editor.clear() && edited()}>
                  Clear
                </Button>
              </HStack>
            </Box>
          )}
          {model.championId && (
            <HintBox
              hint={hint}
              error={hintError}
              segmentation={segmentation}
              shown={showHint}
              onShow={setShowHint}
              onAccept={acceptHint}
            />
          )}
          <Box fontSize="sm">
            <Heading as="h3" size="sm" mb={1}>
              FHIR
            </Heading>
            <Text>
              Image <Code>{example.documentReference}</Code>
            </Text>
            <Text>
              Subject <Code>{example.patient}</Code>
            </Text>
            <Text title="The pseudonymous key curation gives the patient">
              Patient key <Code>{example.patientKey.slice(0, 12)}…</Code> · split {example.split}
            </Text>
          </Box>
          <Box data-testid="label-history">
            <Heading as="h3" size="sm" mb={1}>
              Label history
            </Heading>
            {!history.length && <Text fontSize="sm" color="fg.muted">No label yet.</Text>}
            {history.length > 0 && (
              <Table.Root size="sm">
                <Table.Body>
                  {[...history].reverse().map((h) => (
                    <Table.Row key={h.observation}>
                      <Table.Cell>
                        <Badge size="sm" colorPalette={h.status === "confirmed" ? "green" : h.status === "draft" ? "orange" : "gray"}>
                          {h.status}
                        </Badge>
                      </Table.Cell>
                      <Table.Cell>{h.labelName ?? h.value ?? "—"}</Table.Cell>
                      <Table.Cell>{h.by ?? "—"}</Table.Cell>
                      <Table.Cell color="fg.muted">{h.at ? formatTime(h.at) : "—"}</Table.Cell>
                    </Table.Row>
                  ))}
                </Table.Body>
              </Table.Root>
            )}
          </Box>
          <details>
            <summary style={{ cursor: "pointer", fontSize: "0.875rem" }}>Keyboard shortcuts</summary>
            <Shortcuts />
          </details>
        </Stack>
      </Grid>
    </Box>
  );
}

/** Each key, then what it does wrapping under the key: in the panel's 300 px column a table's
 * second column was ~100 px wide, up to 8 lines a shortcut (issue 31). */
export function Shortcuts() {
  return (
    <Stack gap={1.5} mt={1} fontSize="xs" data-testid="shortcuts">
      {SHORTCUTS.map(([keys, what]) => (
        <Text key={keys} data-testid="shortcut">
          <Kbd size="sm" mr={1.5}>
            {keys}
          </Kbd>
          {what}
        </Text>
      ))}
    </Stack>
  );
}

function Slider({ label, value, min, max, onChange }: { label: string; value: number; min: number; max: number; onChange: (v: number) => void }) {
  return (
    <Box as="label" display="flex" alignItems="center" gap={2} fontSize="sm">
      <Text minW="5.5em">{label}</Text>
      <input
        type="range"
        min={min}
        max={max}
        value={value}
        aria-label={label}
        style={{ accentColor: "var(--chakra-colors-blue-solid)" }}
        onChange={(e) => onChange(Number(e.target.value))}
      />
    </Box>
  );
}

/** The champion's prediction for the example: hidden until asked for (issue 31: shown at once,
 * it anchors the reader), then its labels and confidences and the button that takes it. */
export function HintBox({
  hint,
  error,
  segmentation,
  shown,
  onShow,
  onAccept,
}: {
  hint: Hint | null;
  error: Error | null;
  segmentation: boolean;
  shown: boolean;
  onShow: (shown: boolean) => void;
  onAccept: () => void;
}) {
  return (
    <Box data-testid="hint" borderWidth="1px" borderColor="border" rounded="md" p={3}>
      <Flex align="center" gap={2} mb={1}>
        <Heading as="h3" size="sm">
          Champion's prediction
        </Heading>
        <Box flex="1" />
        <Button size="xs" variant="ghost" aria-expanded={shown} data-testid="toggle-hint" onClick={() => onShow(!shown)}>
          {shown ? "Hide" : "Show (H)"}
        </Button>
      </Flex>
      <Text fontSize="xs" color="fg.muted">
        {shown
          ? "A hint only: it is saved as a label only if you save it."
          : "Hidden so that it does not sway your reading: decide first, then compare."}
      </Text>
      {shown && (
        <Box mt={2} data-testid="hint-content">
          {error && (
            <Text fontSize="sm" color="fg.error">
              {error.message}
            </Text>
          )}
          {!hint && !error && (
            <Text fontSize="sm" color="fg.muted">
              Asking the champion…
            </Text>
          )}
          {hint?.predictions && (
            <Stack gap={0} fontSize="sm" mb={2}>
              {hint.predictions.slice(0, 3).map((p) => (
                <Text key={p.index} fontWeight={p.value ? "semibold" : undefined}>
                  {p.name ?? p.index}: {(p.confidence * 100).toFixed(1)}%
                </Text>
              ))}
            </Stack>
          )}
          {hint && segmentation && (
            <Text fontSize="sm" mb={2} color="fg.muted">
              The predicted mask is drawn over the image.
            </Text>
          )}
          {hint && (
            <Button size="xs" variant="outline" onClick={onAccept} data-testid="accept-hint">
              {segmentation ? "Start from the predicted mask (H)" : "Use the predicted label (H)"}
            </Button>
          )}
        </Box>
      )}
    </Box>
  );
}
