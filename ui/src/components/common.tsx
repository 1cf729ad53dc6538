import { Alert, Badge, Box, Flex, Heading, Spinner, Text } from "@chakra-ui/react";
import type { ReactNode } from "react";

import { ApiError } from "../api";
import { statusPalette } from "../format";

/** A query as the pages read it (queries.ts `loaded`): data, error, whether it is asking, and
 * how to ask again. */
export interface Loaded<T> {
  data?: T;
  error?: ApiError | Error;
  loading: boolean;
  reload: () => void;
}

export function ErrorAlert({ error, title }: { error: Error; title?: string }) {
  const fix = error instanceof ApiError ? error.fix : undefined;
  return (
    <Alert.Root status="error" role="alert">
      <Alert.Indicator />
      <Alert.Content>
        {title && <Alert.Title>{title}</Alert.Title>}
        <Alert.Description>
          {error.message}
          {fix ? ` Fix: ${fix}.` : ""}
        </Alert.Description>
      </Alert.Content>
    </Alert.Root>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <Flex align="center" gap={2} p={4} color="fg.muted" role="status">
      <Spinner size="sm" /> <Text>Loading {what}…</Text>
    </Flex>
  );
}

export function StatusBadge({ status }: { status?: string }) {
  if (!status) return <Text color="fg.muted">—</Text>;
  return (
    <Badge colorPalette={statusPalette(status)} variant="subtle">
      {status}
    </Badge>
  );
}

export function Section({ title, children, actions }: { title: string; children: ReactNode; actions?: ReactNode }) {
  return (
    <Box as="section" mb={6}>
      <Flex align="center" justify="space-between" mb={2} gap={2} wrap="wrap">
        <Heading as="h3" size="md">
          {title}
        </Heading>
        {actions}
      </Flex>
      {children}
    </Box>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return (
    <Text color="fg.muted" p={2}>
      {children}
    </Text>
  );
}
