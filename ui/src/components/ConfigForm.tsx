import { Alert, Box, Button, Field, Flex, Heading, HStack, Input, Link, NativeSelect, Text, Textarea } from "@chakra-ui/react";
import { useEffect, useMemo, useState } from "react";

import { ApiError, type FieldError } from "../api";
import {
  type Config,
  type ConfigKind,
  errorsByPath,
  FIELDS,
  type FormState,
  renderedPaths,
  TEMPLATES,
  toBody,
  toFormState,
} from "../configForm";
import { ObjectEditor } from "./ConfigFields";
import type { View } from "../format";
import { useDatasets, useSaveConfig } from "../queries";

/** Create or edit a model or dataset config. The API validates; its field-level messages (the
 * same as the CLI's) are shown next to the fields they are about. */
export function ConfigForm({
  kind,
  stored,
  readOnly = false,
  go,
  onSaved,
}: {
  kind: ConfigKind;
  /** The stored config to edit (wire shape, with its id); none: create a new one. */
  stored?: { id: string };
  readOnly?: boolean;
  go: (view: View) => void;
  onSaved?: () => void;
}) {
  const existing = stored as Record<string, unknown> | undefined;
  const model = stored;
  const [values, setValues] = useState<FormState>(() => toFormState(kind, existing ?? TEMPLATES[kind]));
  const [errors, setErrors] = useState<FieldError[]>([]);
  const [failure, setFailure] = useState<ApiError | Error | null>(null);
  const [saved, setSaved] = useState(false);
  const save = useSaveConfig(kind, model?.id);
  const busy = save.isPending;
  useEffect(() => setValues(toFormState(kind, existing ?? TEMPLATES[kind])), [kind, stored]); // eslint-disable-line react-hooks/exhaustive-deps
  const datasets = useDatasets(kind === "model");
  // Every error next to the exact field it names (a section in JSON mode: next to the section).
  const rendered = useMemo(() => {
    const paths = renderedPaths(values.config);
    for (const key of Object.keys(values.json)) {
      for (const p of [...paths]) if (p.startsWith(`${key}.`) || p.startsWith(`${key}[`)) paths.delete(p);
    }
    for (const f of FIELDS[kind]) paths.add(f.key);
    return paths;
  }, [values, kind]);
  const grouped = errorsByPath(errors, rendered);
  const submit = async () => {
    setErrors([]);
    setFailure(null);
    setSaved(false);
    const { body, errors: local } = toBody(kind, values, existing ? stripComputed(existing) : {});
    if (!body) {
      setErrors(local);
      return;
    }
    try {
      const result = await save.mutateAsync(body);
      setSaved(true);
      if (!model && kind === "model") go({ kind: "model", modelId: result.id });
      else if (!model) go({ kind: "models" });
      onSaved?.();
    } catch (e) {
      if (e instanceof ApiError && e.errors.length) setErrors(e.errors);
      setFailure(e as Error);
    }
  };
  return (
    <Box as="form" maxW="4xl" onSubmit={(e) => { e.preventDefault(); void submit(); }} data-testid={`${kind}-form`}>
      {!model && (
        <Flex align="baseline" gap={3} mb={4}>
          <Link href="?view=models" color="fg.info" onClick={(e) => { e.preventDefault(); go({ kind: "models" }); }}>
            Models
          </Link>
          <Text color="fg.muted">/</Text>
          <Heading as="h1" size="xl">
            New {kind}
          </Heading>
        </Flex>
      )}
      {readOnly && (
        <Alert.Root status="info" mb={4}>
          <Alert.Indicator />
          <Alert.Description>
            You may read this configuration but not change it (it needs the right to edit{" "}
            {kind === "model" ? "the model's DAG" : "Airflow DAGs"}).
          </Alert.Description>
        </Alert.Root>
      )}
      {failure && (
        <Alert.Root status="error" mb={4} role="alert">
          <Alert.Indicator />
          <Alert.Content>
            <Alert.Title>{failure.message}</Alert.Title>
            {failure instanceof ApiError && failure.fix && <Alert.Description>Fix: {failure.fix}.</Alert.Description>}
            {(grouped[""] ?? []).map((e, i) => (
              <Alert.Description key={i}>
                {e.field}: {e.message}
              </Alert.Description>
            ))}
          </Alert.Content>
        </Alert.Root>
      )}
      {saved && (
        <Alert.Root status="success" mb={4}>
          <Alert.Indicator />
          <Alert.Description>Saved.</Alert.Description>
        </Alert.Root>
      )}
      {FIELDS[kind].map((f) => {
        const own = grouped[f.key] ?? [];
        const setConfig = (config: Config) => setValues((old) => ({ ...old, config }));
        const set = (v: string) => setConfig({ ...values.config, [f.key]: v });
        const jsonText = values.json[f.key];
        const toggleJson = () =>
          setValues((old) => {
            const json = { ...old.json };
            if (json[f.key] === undefined) {
              json[f.key] = JSON.stringify(old.config[f.key] ?? {}, null, 2);
              return { ...old, json };
            }
            try {
              const parsed = JSON.parse(json[f.key]) as unknown;
              delete json[f.key];
              return { config: { ...old.config, [f.key]: parsed }, json };
            } catch {
              return old; // the text stays until it parses; toBody names the field
            }
          });
        if (f.json) {
          return (
            <Box as="fieldset" key={f.key} mb={5} borderWidth="1px" borderRadius="md" p={3}>
              <Flex as="legend" px={1} gap={3} align="center">
                <Text fontWeight="semibold">{f.label}</Text>
                <Button size="2xs" variant="ghost" onClick={toggleJson} aria-label={`${f.label}: edit as ${jsonText === undefined ? "JSON" : "form"}`}>
                  {jsonText === undefined ? "Edit as JSON" : "Edit as form"}
                </Button>
              </Flex>
              <Text fontSize="xs" color="fg.muted" mb={2}>
                {f.help}
              </Text>
              {own.map((e, i) => (
                <Text key={i} fontSize="sm" color="fg.error" data-testid={`error-${f.key}`} role="alert">
                  {e.field}: {e.message}
                </Text>
              ))}
              {jsonText !== undefined ? (
                <Textarea
                  name={f.key}
                  aria-label={`${f.label} (JSON)`}
                  fontFamily="mono"
                  fontSize="xs"
                  rows={Math.min(16, Math.max(4, jsonText.split("\n").length))}
                  value={jsonText}
                  readOnly={readOnly}
                  onChange={(e) => setValues((old) => ({ ...old, json: { ...old.json, [f.key]: e.target.value } }))}
                  spellCheck={false}
                />
              ) : (
                <ObjectEditor
                  path={[f.key]}
                  value={(values.config[f.key] ?? {}) as Config}
                  root={values.config}
                  setRoot={setConfig}
                  errors={grouped}
                  readOnly={readOnly}
                />
              )}
            </Box>
          );
        }
        return (
          <Field.Root key={f.key} invalid={own.length > 0} mb={4} readOnly={readOnly} disabled={readOnly}>
            <Field.Label>{f.label}</Field.Label>
            {f.key === "datasetId" ? (
              <NativeSelect.Root size="sm">
                <NativeSelect.Field value={String(values.config[f.key] ?? "")} onChange={(e) => set(e.target.value)} name={f.key}>
                  <option value="">Choose a dataset…</option>
                  {(datasets.data?.datasets ?? []).map((d) => (
                    <option key={d.id} value={d.id}>
                      {d.name}
                    </option>
                  ))}
                </NativeSelect.Field>
                <NativeSelect.Indicator />
              </NativeSelect.Root>
            ) : (
              <Input size="sm" name={f.key} value={String(values.config[f.key] ?? "")} onChange={(e) => set(e.target.value)} />
            )}
            {own.length > 0 ? (
              own.map((e, i) => (
                <Field.ErrorText key={i} data-testid={`error-${f.key}`}>
                  {e.field}: {e.message}
                </Field.ErrorText>
              ))
            ) : (
              <Field.HelperText>{f.help}</Field.HelperText>
            )}
          </Field.Root>
        );
      })}
      {!readOnly && (
        <HStack>
          <Button type="submit" colorPalette="blue" loading={busy}>
            {model ? "Save" : `Create ${kind}`}
          </Button>
        </HStack>
      )}
    </Box>
  );
}

/** An existing config as a PUT body base: the stored fields minus those the server computes. */
function stripComputed(config: Record<string, unknown>): Record<string, unknown> {
  const { id: _id, accountId: _a, championId: _c, slug: _s, dagId: _d, revision: _r, createdAt: _ca, updatedAt: _u, ...rest } = config;
  return rest;
}
