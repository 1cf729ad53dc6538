import { Component, type ReactNode } from "react";

import { ErrorAlert } from "./common";

/** A page that fails to render says so (with the error) instead of going blank. */
export class ErrorBoundary extends Component<{ children: ReactNode }, { error: Error | null }> {
  state = { error: null as Error | null };

  static getDerivedStateFromError(error: Error) {
    return { error };
  }

  render() {
    if (this.state.error) return <ErrorAlert error={this.state.error} title="This page could not be shown" />;
    return this.props.children;
  }
}
