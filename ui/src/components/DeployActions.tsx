import { Alert, Box, Button, CloseButton, Dialog, Field, Flex, Portal, Text, Textarea } from "@chakra-ui/react";
import { useQuery } from "@tanstack/react-query";
import { useState } from "react";

import { ApiError, type Model, type Run } from "../api";
import { getDeployOptionsOptions } from "../client/@tanstack/react-query.gen";
import { deployOffer, type DeployOptions } from "../deploy";
import { useDeploy, useRefetchOn, useRollback } from "../queries";

export type DeployAction = "deploy" | "rollback";

/** Asks before deploying or rolling back (a rollback needs a justification), then calls the
 * API and shows its error text (message and fix; a field error under the field). */
export function ConfirmDeploy({
  action,
  modelId,
  modelName,
  runId,
  runSlug,
  deployType,
  onClose,
  onDone,
}: {
  action: DeployAction | null;
  modelId: string;
  modelName: string;
  runId: string;
  runSlug: string;
  deployType?: string;
  onClose: () => void;
  onDone: () => void;
}) {
  const [reason, setReason] = useState("");
  const deploy = useDeploy(modelId);
  const rollback = useRollback(modelId);
  const busy = deploy.isPending || rollback.isPending;
  const error = (deploy.error ?? rollback.error) as Error | null;
  const fieldError =
    error instanceof ApiError ? error.errors.find((e) => e.field === "description")?.message : undefined;
  const close = () => {
    if (busy) return;
    deploy.reset();
    rollback.reset();
    setReason("");
    onClose();
  };
  // The mutations invalidate the model's queries (its runs, deployments, deploy options).
  const confirm = async () => {
    deploy.reset();
    rollback.reset();
    const path = { model_id: modelId, run_id: runId };
    try {
      if (action === "rollback") await rollback.mutateAsync({ path, body: { description: reason } });
      else await deploy.mutateAsync({ path });
    } catch {
      return; // shown from the mutation's error
    }
    setReason("");
    onDone();
    onClose();
  };
  const cloud = deployType === "cloud";
  const what = cloud
    ? "A new endpoint is started and must answer before the champion changes; if it fails, the current champion keeps serving."
    : deployType === "edge"
      ? "The run's model artifact becomes the one devices download."
      : "";
  return (
    <Dialog.Root
      open={action !== null}
      onOpenChange={(e) => !e.open && close()}
      role="alertdialog"
      closeOnInteractOutside={!busy}
    >
      <Portal>
        <Dialog.Backdrop />
        <Dialog.Positioner>
          <Dialog.Content data-testid="deploy-dialog">
            <Dialog.Header>
              <Dialog.Title>
                {action === "rollback" ? `Roll back ${modelName} to run ${runSlug}?` : `Deploy run ${runSlug}?`}
              </Dialog.Title>
            </Dialog.Header>
            <Dialog.Body>
              <Text fontSize="sm" mb={3}>
                {action === "rollback"
                  ? `Run ${runSlug} was champion before. It is approved again (recorded as a rollback, with your justification) and deployed as the champion of ${modelName}.`
                  : `Run ${runSlug} becomes the champion of ${modelName}.`}{" "}
                {what}
              </Text>
              {action === "rollback" && (
                <Field.Root invalid={Boolean(fieldError)} required>
                  <Field.Label>
                    Justification <Field.RequiredIndicator />
                  </Field.Label>
                  <Textarea
                    name="rollback-justification"
                    rows={3}
                    maxLength={2000}
                    value={reason}
                    onChange={(e) => setReason(e.target.value)}
                    placeholder="Why restore this run as champion? Recorded in the audit trail."
                  />
                  {fieldError ? (
                    <Field.ErrorText>Justification {fieldError}</Field.ErrorText>
                  ) : (
                    <Field.HelperText>Required, as for any approval.</Field.HelperText>
                  )}
                </Field.Root>
              )}
              {error && !fieldError && (
                <Alert.Root status="error" mt={3} role="alert">
                  <Alert.Indicator />
                  <Alert.Content>
                    <Alert.Title>{action === "rollback" ? "No rollback" : "Not deployed"}</Alert.Title>
                    <Alert.Description>
                      {error.message}
                      {error instanceof ApiError && error.fix ? ` Fix: ${error.fix}.` : ""}
                    </Alert.Description>
                  </Alert.Content>
                </Alert.Root>
              )}
              {busy && cloud && (
                <Text fontSize="xs" color="fg.muted" mt={2} role="status">
                  Starting the endpoint and waiting for it to answer…
                </Text>
              )}
            </Dialog.Body>
            <Dialog.Footer>
              <Button variant="outline" onClick={close} disabled={busy}>
                Cancel
              </Button>
              <Button colorPalette={action === "rollback" ? "orange" : "green"} loading={busy} onClick={confirm}>
                {action === "rollback" ? "Roll back" : "Deploy"}
              </Button>
            </Dialog.Footer>
            <Dialog.CloseTrigger asChild>
              <CloseButton size="sm" disabled={busy} />
            </Dialog.CloseTrigger>
          </Dialog.Content>
        </Dialog.Positioner>
      </Portal>
    </Dialog.Root>
  );
}

/** The run page's Deploy / Roll back button, offered when the API would accept it. */
export function RunDeployActions({ run, model, onDone }: { run: Run; model: Model; onDone: () => void }) {
  const options = useQuery(getDeployOptionsOptions({ path: { model_id: run.modelId, run_id: run.id } }));
  // The pipeline moves the run on its own (deploying, deployed, a decision by someone else).
  useRefetchOn(options, [run.deployStatus, run.approvals.length, model.championId]);
  const [open, setOpen] = useState<DeployAction | null>(null);
  if (!options.data) return null; // a failure to ask changes nothing: the API still decides
  const offer = deployOffer(run, model.championId, options.data.deployOptions as DeployOptions);
  if (!offer.action && !offer.note) return null;
  return (
    <Box mt={3} data-testid="deploy-actions">
      {offer.action && (
        <Flex gap={3} align="center" wrap="wrap">
          <Button
            colorPalette={offer.action === "rollback" ? "orange" : "green"}
            variant={offer.action === "rollback" ? "outline" : "solid"}
            onClick={() => setOpen(offer.action)}
          >
            {offer.action === "rollback" ? "Roll back to this run…" : "Deploy…"}
          </Button>
          <Text fontSize="sm" color="fg.muted">
            {offer.action === "rollback"
              ? "This run was champion before; restore it as champion."
              : "Approved and not deployed: make it the champion now."}
          </Text>
        </Flex>
      )}
      {offer.note && (
        <Text fontSize="sm" color="fg.muted" data-testid="deploy-note">
          {offer.note}
        </Text>
      )}
      <ConfirmDeploy
        action={open}
        modelId={model.id}
        modelName={model.name}
        runId={run.id}
        runSlug={run.slug}
        deployType={(model.deployApproach as { type?: string }).type}
        onClose={() => setOpen(null)}
        onDone={onDone}
      />
    </Box>
  );
}
