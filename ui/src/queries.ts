// The pages' data: TanStack Query hooks over the generated client (src/client, `make ui-client`).
// Query keys come from the generated options, so two components asking for the same thing share
// one request and one cache entry; every write invalidates the queries of the model it changed.
import { useEffect, useRef } from "react";
import { keepPreviousData, type QueryClient, type UseQueryResult, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

import type { Model, Permissions, Run } from "./api";
import {
  createApprovalMutation,
  createDeploymentMutation,
  createRollbackMutation,
  createRunMutation,
  getDagModelRefOptions,
  getDagRunRefOptions,
  listDatasetsOptions,
  getDatasetOptions,
  getModelOptions,
  getPermissionsOptions,
  getRunOptions,
  listModelSummariesOptions,
  listRunsOptions,
} from "./client/@tanstack/react-query.gen";
import { createDataset, createModel, updateDataset, updateModel } from "./client/sdk.gen";
import type { DatasetConfigInput, ListModelSummariesData, ListRunsData, ModelConfigInput } from "./client/types.gen";
import type { Loaded } from "./components/common";

/** A query in the shape the pages' loading/error/reload code reads. */
export function loaded<T>(query: UseQueryResult<T, unknown>): Loaded<T> {
  return {
    data: query.data,
    error: query.error ? (query.error as Error) : undefined,
    loading: query.isFetching,
    reload: () => void query.refetch(),
  };
}

/** The path parameters of a generated query key (its first element). */
function keyPath(queryKey: readonly unknown[]): Record<string, unknown> {
  return ((queryKey[0] as { path?: Record<string, unknown> } | undefined)?.path ?? {}) as Record<string, unknown>;
}

/** After a write to a model (a run started, approved, deployed; its config saved): every query
 * about it, and the Models table, are stale. */
export function invalidateModel(client: QueryClient, modelId: string): Promise<void> {
  return client.invalidateQueries({
    predicate: (query) => {
      const key = query.queryKey[0] as { _id?: string } | undefined;
      return keyPath(query.queryKey).model_id === modelId || key?._id === "listModelSummaries";
    },
  });
}

/** After a write to a dataset (its config saved, an example labelled). */
export function invalidateDataset(client: QueryClient, datasetId: string): Promise<void> {
  return client.invalidateQueries({ predicate: (query) => keyPath(query.queryKey).dataset_id === datasetId });
}

export function modelSummariesOptions(query: NonNullable<ListModelSummariesData["query"]>) {
  return listModelSummariesOptions({ query: { ...query, search: query.search || undefined } });
}

export function useModelSummaries(query: NonNullable<ListModelSummariesData["query"]>) {
  // The table keeps the previous page on screen while the next one loads.
  return useQuery({ ...modelSummariesOptions(query), placeholderData: keepPreviousData });
}

export function modelOptions(modelId: string) {
  return getModelOptions({ path: { model_id: modelId } });
}

export function permissionsOptions(modelId: string) {
  return getPermissionsOptions({ path: { model_id: modelId } });
}

export function runsOptions(modelId: string, query: NonNullable<ListRunsData["query"]>) {
  return listRunsOptions({ path: { model_id: modelId }, query });
}

/** The model of a DAG (when the page was opened from Airflow with only its dagId). */
export function useModelId(modelId: string | undefined, dagId: string | undefined): Loaded<string> {
  const ref = useQuery({
    ...getDagModelRefOptions({ path: { dag_id: dagId ?? "" } }),
    enabled: !modelId && !!dagId,
  });
  if (modelId) return { data: modelId, loading: false, reload: () => undefined };
  if (!dagId) return { error: new Error("No model given: open one from the Models table."), loading: false, reload: () => undefined };
  return { ...loaded(ref), data: ref.data?.model.modelId };
}

/** A model with what the user may do with it. */
export function useModelWithPermissions(
  modelId: string | undefined,
  options: { refetchInterval?: number | false } = {},
): Loaded<{ model: Model; permissions: Permissions }> {
  const model = useQuery({ ...modelOptions(modelId ?? ""), enabled: !!modelId, ...options });
  const permissions = useQuery({ ...permissionsOptions(modelId ?? ""), enabled: !!modelId });
  return {
    data:
      model.data && permissions.data
        ? { model: model.data.model as Model, permissions: permissions.data.permissions as Permissions }
        : undefined,
    error: (model.error ?? permissions.error ?? undefined) as Error | undefined,
    loading: model.isFetching || permissions.isFetching,
    reload: () => {
      void model.refetch();
      void permissions.refetch();
    },
  };
}

/** One page of a model's runs (the extended view: extensions included). */
export function useRuns(modelId: string, query: NonNullable<ListRunsData["query"]>): Loaded<{ runs: Run[]; totalEntries: number }> {
  const runs = useQuery({ ...runsOptions(modelId, query), placeholderData: keepPreviousData });
  const result = loaded(runs);
  return { ...result, data: runs.data as { runs: Run[]; totalEntries: number } | undefined };
}

/** The run of an Airflow DAG run, or the one named. */
export function useRunRef(
  view: { modelId?: string; runId?: string; dagId?: string; dagRunId?: string },
): Loaded<{ modelId: string; runId: string }> {
  const named = !!(view.modelId && view.runId);
  const byDag = !named && !!(view.dagId && view.dagRunId);
  const ref = useQuery({
    ...getDagRunRefOptions({ path: { dag_id: view.dagId ?? "", dag_run_id: view.dagRunId ?? "" } }),
    enabled: byDag,
  });
  const none = () => undefined;
  if (named) return { data: { modelId: view.modelId!, runId: view.runId! }, loading: false, reload: none };
  if (!byDag) return { error: new Error("No run given: open a run from a model's Runs tab."), loading: false, reload: none };
  return { ...loaded(ref), data: ref.data?.run };
}

export function runOptions(modelId: string, runId: string) {
  return getRunOptions({ path: { model_id: modelId, run_id: runId } });
}

export function useRun(modelId: string | undefined, runId: string | undefined, refetchInterval: number | false = false) {
  const run = useQuery({
    ...runOptions(modelId ?? "", runId ?? ""),
    enabled: !!(modelId && runId),
    refetchInterval,
  });
  return { ...loaded(run), data: run.data?.run as Run | undefined };
}

export function useDataset(datasetId: string) {
  return useQuery(getDatasetOptions({ path: { dataset_id: datasetId } }));
}

/** Start a run of a model now. */
export function useStartRun(modelId: string) {
  const client = useQueryClient();
  return useMutation({
    ...createRunMutation(),
    onSettled: () => invalidateModel(client, modelId),
  });
}

/** Approve or reject a run (recorded with the channel `ui`). */
export function useDecision(modelId: string) {
  const client = useQueryClient();
  return useMutation({
    ...createApprovalMutation(),
    onSettled: () => invalidateModel(client, modelId),
  });
}

/** Deploy an approved run now. */
export function useDeploy(modelId: string) {
  const client = useQueryClient();
  return useMutation({
    ...createDeploymentMutation(),
    onSettled: () => invalidateModel(client, modelId),
  });
}

/** Roll back to an earlier champion (approved again with a justification, then deployed). */
export function useRollback(modelId: string) {
  const client = useQueryClient();
  return useMutation({
    ...createRollbackMutation(),
    onSettled: () => invalidateModel(client, modelId),
  });
}

/** Ask `query` again when `deps` change after its first answer (what the page shows moved on
 * without a write from this page: the pipeline deployed, another user decided). */
export function useRefetchOn(query: { refetch: () => unknown }, deps: unknown[]): void {
  const signature = JSON.stringify(deps);
  const seen = useRef(signature);
  const { refetch } = query;
  useEffect(() => {
    if (seen.current === signature) return;
    seen.current = signature;
    void refetch();
  }, [signature, refetch]);
}

/** The dataset configs (the model form's dataset choice). */
export function useDatasets(enabled = true) {
  return useQuery({ ...listDatasetsOptions(), enabled });
}

/** Create or replace a model or dataset config (the API validates; its field errors come back
 * as an ApiError). A saved config's queries, and the Models table, are asked again. */
export function useSaveConfig(kind: "model" | "dataset", id: string | undefined) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: async (body: Record<string, unknown>): Promise<{ id: string }> => {
      if (kind === "model") {
        const options = { body: body as ModelConfigInput, throwOnError: true } as const;
        const { data } = id ? await updateModel({ ...options, path: { model_id: id } }) : await createModel(options);
        return data.model;
      }
      const options = { body: body as DatasetConfigInput, throwOnError: true } as const;
      const { data } = id ? await updateDataset({ ...options, path: { dataset_id: id } }) : await createDataset(options);
      return data.dataset;
    },
    onSuccess: (saved) =>
      kind === "model"
        ? invalidateModel(client, saved.id)
        : Promise.all([
            invalidateDataset(client, saved.id),
            client.invalidateQueries({ queryKey: [{ _id: "listDatasets" }] }),
            client.invalidateQueries({ queryKey: [{ _id: "listModelSummaries" }] }),
          ]),
  });
}
