import { Alert, Box, Button, Field, HStack, Textarea } from "@chakra-ui/react";
import { useState } from "react";

import { api, ApiError, type Run } from "../api";
import { approvalState } from "../format";

/** Approve or reject a run with a required justification, through the REST API (same checks,
 * same audit as the CLI). Users who may not decide see why instead of the buttons. */
export function ApprovalForm({
  run,
  championId,
  mayDecide,
  decideReason,
  onDecided,
}: {
  run: Run;
  championId?: string | null;
  mayDecide: boolean;
  decideReason?: string | null;
  onDecided: () => void;
}) {
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState<"approved" | "rejected" | null>(null);
  const [error, setError] = useState<ApiError | Error | null>(null);
  const state = approvalState(run, championId, mayDecide, decideReason);
  if (state.blocker) {
    return (
      <Alert.Root status={mayDecide ? "info" : "warning"} data-testid="approval-blocked">
        <Alert.Indicator />
        <Alert.Content>
          <Alert.Title>No decision possible here</Alert.Title>
          <Alert.Description>{state.blocker}</Alert.Description>
        </Alert.Content>
      </Alert.Root>
    );
  }
  const fieldError =
    error instanceof ApiError ? error.errors.find((e) => e.field === "description")?.message : undefined;
  const decide = async (decision: "approved" | "rejected") => {
    setBusy(decision);
    setError(null);
    try {
      await api(`/models/${run.modelId}/runs/${run.id}/approvals`, {
        method: "POST",
        body: { decision, description: reason },
      });
      setReason("");
      onDecided();
    } catch (e) {
      setError(e as Error);
    } finally {
      setBusy(null);
    }
  };
  return (
    <Box
      as="form"
      borderWidth="1px"
      borderRadius="md"
      p={4}
      data-testid="approval-form"
      onSubmit={(e) => e.preventDefault()}
    >
      <Field.Root invalid={Boolean(fieldError)} required>
        <Field.Label>
          Justification <Field.RequiredIndicator />
        </Field.Label>
        <Textarea
          value={reason}
          onChange={(e) => setReason(e.target.value)}
          placeholder="Why do you approve or reject this run? Recorded in the audit trail."
          rows={3}
          maxLength={2000}
          name="justification"
        />
        {fieldError ? (
          <Field.ErrorText>Justification {fieldError}</Field.ErrorText>
        ) : (
          <Field.HelperText>Required. Shown in the run's decision, the model card and the audit trail.</Field.HelperText>
        )}
      </Field.Root>
      {error && !fieldError && (
        <Alert.Root status="error" mt={3} role="alert">
          <Alert.Indicator />
          <Alert.Content>
            <Alert.Description>
              {error.message}
              {error instanceof ApiError && error.fix ? ` Fix: ${error.fix}.` : ""}
            </Alert.Description>
          </Alert.Content>
        </Alert.Root>
      )}
      <HStack mt={3} gap={2}>
        <Button colorPalette="green" loading={busy === "approved"} disabled={busy !== null} onClick={() => decide("approved")}>
          Approve
        </Button>
        <Button colorPalette="red" variant="outline" loading={busy === "rejected"} disabled={busy !== null} onClick={() => decide("rejected")}>
          Reject
        </Button>
      </HStack>
    </Box>
  );
}
