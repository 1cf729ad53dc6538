// Moving between pages: inside the iframe (query string + history), and out to Airflow's own
// pages in the window around it (the iframe is same-origin, so its router can be told).

import { useEffect, useState } from "react";

import { parseView, type View, viewSearch } from "./format";

export function useView(): [View, (view: View) => void] {
  const [view, setView] = useState<View>(() => parseView(window.location.search));
  useEffect(() => {
    const onPop = () => setView(parseView(window.location.search));
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);
  const go = (next: View) => {
    window.history.pushState(null, "", viewSearch(next));
    setView(next);
    window.scrollTo(0, 0);
  };
  return [view, go];
}

/** The root of Airflow's UI (where /v1/patient-ml and /patient-ml-ui/ live). */
export function airflowBase(): string {
  return new URL("..", document.baseURI).pathname;
}

export function airflowDagUrl(dagId: string, dagRunId?: string, tab?: string): string {
  let path = `${airflowBase()}dags/${encodeURIComponent(dagId)}`;
  if (dagRunId) path += `/runs/${encodeURIComponent(dagRunId)}`;
  if (tab) path += `/${tab}`;
  return path;
}

/** Open one of Airflow's pages in the window around the iframe (else in this frame). */
export function openInAirflow(path: string): void {
  try {
    const top = window.top;
    if (top && top !== window && top.location.origin === window.location.origin) {
      const index = ((top.history.state as { idx?: number } | null)?.idx ?? 0) + 1;
      top.history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx: index }, "", path);
      top.dispatchEvent(new PopStateEvent("popstate", { state: top.history.state }));
      return;
    }
  } catch {
    /* not Airflow's window */
  }
  window.location.assign(path);
}
