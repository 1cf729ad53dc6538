import { Alert, Badge, Box, Flex, Heading, Spinner, Text } from "@chakra-ui/react";
import { type ReactNode, useCallback, useEffect, useState } from "react";

import { ApiError } from "../api";
import { statusPalette } from "../format";

export interface Loaded<T> {
  data?: T;
  error?: ApiError | Error;
  loading: boolean;
  reload: () => void;
}

/** Load `fetcher()` now and whenever `deps` change; `reload()` loads it again. */
export function useLoad<T>(fetcher: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: Error; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    fetcher().then(
      (data) => live && setState({ data, loading: false }),
      (error: Error) => live && setState({ error, loading: false }),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
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
