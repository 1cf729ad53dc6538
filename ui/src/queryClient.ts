// The pages' TanStack Query cache: one request per query key however many components ask
// (de-duplication), answers reused while fresh (caching), and writes invalidate what they change
// (see queries.ts).
import { QueryClient } from "@tanstack/react-query";

import { ApiError } from "./api";

/** Client errors (4xx: no right, not found, invalid) are answers, not hiccups: never retried. */
export function shouldRetry(failures: number, error: unknown): boolean {
  if (error instanceof ApiError && error.status >= 400 && error.status < 500) return false;
  return failures < 2;
}

export function createQueryClient(options: { retry?: boolean } = {}): QueryClient {
  return new QueryClient({
    defaultOptions: {
      queries: {
        // A page's data is reused for 30 s (tabs switched back and forth ask once); writes
        // invalidate what they change at once.
        staleTime: 30_000,
        // As before the cache: a page reloads what it shows when asked, not on every focus.
        refetchOnWindowFocus: false,
        retry: options.retry === false ? false : shouldRetry,
      },
      mutations: { retry: false },
    },
  });
}
