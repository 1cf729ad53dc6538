// The nested parts of a config (training approach, approval policy, problem definition, ...)
// as form fields: objects as groups, lists as items with Add / Remove, numbers, booleans and
// the product's enumerations as their own inputs. Each field carries its API path (`name`), and
// the API's errors for that path are shown under it.

import { Box, Button, Checkbox, Field, Flex, Input, NativeSelect, SimpleGrid, Text } from "@chakra-ui/react";
import { useEffect, useState } from "react";

import type { FieldError } from "../api";
import {
  type Config,
  enumOptions,
  getAt,
  labelOf,
  newItem,
  parseLeaf,
  type Path,
  pathText,
  removeAt,
  setAt,
} from "../configForm";

interface NodeProps {
  path: Path;
  root: Config;
  setRoot: (root: Config) => void;
  errors: Record<string, FieldError[]>;
  readOnly: boolean;
}

function isObject(v: unknown): v is Config {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function Errors({ path, errors }: { path: Path; errors: Record<string, FieldError[]> }) {
  const own = errors[pathText(path)] ?? [];
  return (
    <>
      {own.map((e, i) => (
        <Text key={i} fontSize="sm" color="fg.error" role="alert" data-testid={`error-${pathText(path)}`}>
          {e.message}
        </Text>
      ))}
    </>
  );
}

/** An object's fields: simple values in a grid, then nested objects and lists as groups. */
export function ObjectEditor({ value, ...props }: NodeProps & { value: Config }) {
  const entries = Object.entries(value);
  const leaves = entries.filter(([, v]) => !isObject(v) && !Array.isArray(v));
  const groups = entries.filter(([, v]) => isObject(v) || Array.isArray(v));
  return (
    <Box>
      {leaves.length > 0 && (
        <SimpleGrid columns={{ base: 1, md: 2, lg: 3 }} gapX={4} gapY={2} mb={groups.length ? 3 : 0}>
          {leaves.map(([k, v]) => (
            <LeafEditor key={k} {...props} path={[...props.path, k]} value={v} />
          ))}
        </SimpleGrid>
      )}
      {groups.map(([k, v]) => {
        const path = [...props.path, k];
        return (
          <Box key={k} as="fieldset" borderLeftWidth="2px" borderColor="border.emphasized" pl={3} mb={3}>
            <Text as="legend" fontSize="sm" fontWeight="semibold" mb={1}>
              {labelOf(k)}
            </Text>
            <Errors path={path} errors={props.errors} />
            {Array.isArray(v) ? (
              <ListEditor {...props} path={path} value={v} />
            ) : (
              <ObjectEditor {...props} path={path} value={v as Config} />
            )}
          </Box>
        );
      })}
    </Box>
  );
}

/** A list: each item (a sub-form, or one input) with Remove, and Add. */
function ListEditor({ value, ...props }: NodeProps & { value: unknown[] }) {
  const label = labelOf(props.path[props.path.length - 1]);
  const add = () => props.setRoot(setAt(props.root, props.path, [...value, newItem(props.path, value)]));
  return (
    <Box>
      {value.length === 0 && (
        <Text fontSize="sm" color="fg.muted" mb={1}>
          None.
        </Text>
      )}
      {value.map((item, i) => {
        const path = [...props.path, i];
        const remove = (
          <Button
            size="2xs"
            variant="ghost"
            colorPalette="red"
            onClick={() => props.setRoot(removeAt(props.root, path))}
            aria-label={`Remove ${label} ${i + 1}`}
            hidden={props.readOnly}
          >
            Remove
          </Button>
        );
        return isObject(item) ? (
          <Box key={i} borderWidth="1px" borderRadius="md" p={2} mb={2} data-testid={`item-${pathText(path)}`}>
            <Flex justify="space-between" align="center" mb={1}>
              <Text fontSize="xs" color="fg.muted">
                {label} {i + 1}
              </Text>
              {remove}
            </Flex>
            <Errors path={path} errors={props.errors} />
            <ObjectEditor {...props} path={path} value={item} />
          </Box>
        ) : (
          <Flex key={i} gap={2} align="start" mb={1}>
            <Box flex="1">
              <LeafEditor {...props} path={path} value={item} label={`${label} ${i + 1}`} hideLabel />
            </Box>
            {remove}
          </Flex>
        );
      })}
      {!props.readOnly && (
        <Button size="xs" variant="outline" onClick={add} mt={1}>
          Add {label.toLowerCase().replace(/s$/, "")}
        </Button>
      )}
    </Box>
  );
}

/** One value: a checkbox, a choice of the product's values, or a text/number input. */
function LeafEditor({
  value,
  label,
  hideLabel = false,
  ...props
}: NodeProps & { value: unknown; label?: string; hideLabel?: boolean }) {
  const name = pathText(props.path);
  const own = props.errors[name] ?? [];
  const text = value === undefined || value === null ? "" : String(value);
  const [draft, setDraft] = useState(text);
  useEffect(() => {
    // Follow changes from elsewhere (JSON mode, Remove), not the text being typed.
    if (parseLeaf(draft, value) !== value) setDraft(text);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [text]);
  const set = (v: unknown) => props.setRoot(setAt(props.root, props.path, v));
  const shown = label ?? labelOf(props.path[props.path.length - 1]);
  const options = enumOptions(props.path);
  let input;
  if (typeof value === "boolean") {
    return (
      <Field.Root invalid={own.length > 0} disabled={props.readOnly}>
        <Checkbox.Root size="sm" checked={value} onCheckedChange={(e) => set(Boolean(e.checked))} name={name} mt={6}>
          <Checkbox.HiddenInput />
          <Checkbox.Control />
          <Checkbox.Label>{shown}</Checkbox.Label>
        </Checkbox.Root>
        {own.map((e, i) => (
          <Field.ErrorText key={i} data-testid={`error-${name}`}>
            {e.message}
          </Field.ErrorText>
        ))}
      </Field.Root>
    );
  }
  if (options) {
    const all = options.includes(text) || text === "" ? options : [text, ...options];
    input = (
      <NativeSelect.Root size="sm">
        <NativeSelect.Field name={name} value={text} onChange={(e) => set(e.target.value)} aria-label={hideLabel ? shown : undefined}>
          {text === "" && <option value="">Choose…</option>}
          {all.map((o) => (
            <option key={o} value={o}>
              {o}
            </option>
          ))}
        </NativeSelect.Field>
        <NativeSelect.Indicator />
      </NativeSelect.Root>
    );
  } else {
    const numeric = typeof value === "number";
    input = (
      <Input
        size="sm"
        name={name}
        inputMode={numeric ? "decimal" : undefined}
        value={draft}
        aria-label={hideLabel ? shown : undefined}
        onChange={(e) => {
          setDraft(e.target.value);
          set(parseLeaf(e.target.value, value ?? getAt(props.root, props.path)));
        }}
      />
    );
  }
  return (
    <Field.Root invalid={own.length > 0} readOnly={props.readOnly} disabled={props.readOnly}>
      {!hideLabel && <Field.Label fontSize="xs">{shown}</Field.Label>}
      {input}
      {own.map((e, i) => (
        <Field.ErrorText key={i} data-testid={`error-${name}`}>
          {e.message}
        </Field.ErrorText>
      ))}
    </Field.Root>
  );
}
