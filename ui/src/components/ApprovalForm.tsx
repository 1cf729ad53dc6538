import { Alert, Box, Button, Checkbox, Field, HStack, Text, Textarea } from "@chakra-ui/react";
import { useState } from "react";

import { ApiError, type Run } from "../api";
import type { ApprovalDecisionInput } from "../client/types.gen";
import { approvalState } from "../format";
import { useDecision } from "../queries";

/** Approve or reject a run with a required justification, through the REST API (same checks,
 * same audit as the CLI). A user who may not decide sees who may and why not before typing
 * anything: the form is shown disabled under that notice. When the
 * run's gate requires an override (a failed change-control rule, or worse on the objective),
 * approving needs the override confirmed with its own justification. */
export function ApprovalForm({
  run,
  championId,
  mayDecide,
  decideReason,
  approvers,
  user,
  onDecided,
}: {
  run: Run;
  championId?: string | null;
  mayDecide: boolean;
  decideReason?: string | null;
  approvers?: string[];
  user?: string;
  onDecided: () => void;
}) {
  const [reason, setReason] = useState("");
  const [overriding, setOverriding] = useState(false);
  const [override, setOverride] = useState("");
  // The decision's mutation invalidates the model's queries (this run, its list, deploy options).
  const decision = useDecision(run.modelId);
  const busy = decision.isPending ? (decision.variables?.body.decision ?? null) : null;
  const error = decision.error as ApiError | Error | null;
  // The run's own state first (running, decided, timed out); then who may decide it.
  const state = approvalState(run, championId, true, null, user);
  const locked = !mayDecide;
  if (state.blocker) {
    return (
      <Alert.Root status="info" data-testid="approval-blocked">
        <Alert.Indicator />
        <Alert.Content>
          <Alert.Title>No decision possible here</Alert.Title>
          <Alert.Description>{state.blocker}</Alert.Description>
        </Alert.Content>
      </Alert.Root>
    );
  }
  const needsOverride = Boolean(run.gate?.overrideRequired);
  const errorOf = (field: string) =>
    error instanceof ApiError ? error.errors.find((e) => e.field === field)?.message : undefined;
  const fieldError = errorOf("description");
  const overrideError = errorOf("override");
  const decide = async (verdict: "approved" | "rejected") => {
    const body: ApprovalDecisionInput = { decision: verdict, description: reason };
    if (verdict === "approved" && needsOverride) body.override = { justification: override };
    try {
      await decision.mutateAsync({ path: { model_id: run.modelId, run_id: run.id }, body });
    } catch {
      return; // shown from the mutation's error
    }
    setReason("");
    setOverride("");
    onDecided();
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
      {locked && <WhoMayDecide approvers={approvers ?? []} reason={decideReason} />}
      <Field.Root invalid={Boolean(fieldError)} required disabled={locked}>
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
          disabled={locked}
        />
        {fieldError ? (
          <Field.ErrorText>Justification {fieldError}</Field.ErrorText>
        ) : (
          <Field.HelperText>Required. Shown in the run's decision, the model card and the audit trail.</Field.HelperText>
        )}
      </Field.Root>
      {needsOverride && (
        <Box mt={4} p={3} borderWidth="1px" borderColor="border.warning" borderRadius="md" data-testid="override-form">
          <Text fontSize="sm" mb={2}>
            This challenger {run.gate!.overrideReasons.join("; and ")}. To approve it anyway, confirm an override with its own
            justification; it is recorded and audited as an override.
          </Text>
          <Checkbox.Root
            checked={overriding}
            onCheckedChange={(e) => setOverriding(Boolean(e.checked))}
            name="confirm-override"
            disabled={locked}
          >
            <Checkbox.HiddenInput />
            <Checkbox.Control />
            <Checkbox.Label>I override the failed change-control rules</Checkbox.Label>
          </Checkbox.Root>
          {overriding && (
            <Field.Root invalid={Boolean(overrideError)} required mt={3}>
              <Field.Label>
                Override justification <Field.RequiredIndicator />
              </Field.Label>
              <Textarea
                value={override}
                onChange={(e) => setOverride(e.target.value)}
                placeholder="Why approve although the rules fail? Not the same text as the justification above."
                rows={2}
                maxLength={2000}
                name="override-justification"
              />
              {overrideError && <Field.ErrorText>Override {overrideError}</Field.ErrorText>}
            </Field.Root>
          )}
        </Box>
      )}
      {error && !fieldError && !overrideError && (
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
        <Button
          colorPalette={needsOverride ? "orange" : "green"}
          loading={busy === "approved"}
          disabled={locked || busy !== null || (needsOverride && !overriding)}
          onClick={() => decide("approved")}
        >
          {needsOverride ? "Approve with override" : "Approve"}
        </Button>
        <Button colorPalette="red" variant="outline" loading={busy === "rejected"} disabled={locked || busy !== null} onClick={() => decide("rejected")}>
          Reject
        </Button>
      </HStack>
    </Box>
  );
}

/** Who may decide on the run and why the signed-in user may not, shown above the disabled form. */
function WhoMayDecide({ approvers, reason }: { approvers: string[]; reason?: string | null }) {
  return (
    <Alert.Root status="warning" mb={3} data-testid="approval-who">
      <Alert.Indicator />
      <Alert.Content>
        <Alert.Title>You may not decide on this run</Alert.Title>
        <Alert.Description>
          <Text data-testid="approval-approvers">
            Who may decide: {approvers.length ? approvers.join(", ") : "any user with the decision right"}.
          </Text>
          <Text data-testid="approval-reason">{reason ?? "You may not decide on runs of this model."}</Text>
        </Alert.Description>
      </Alert.Content>
    </Alert.Root>
  );
}
