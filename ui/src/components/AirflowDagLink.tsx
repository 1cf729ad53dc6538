// A link to a DAG (or one of its runs) in Airflow's own UI: a real href (open in a new tab,
// copy the address), and a plain click moves the window around the iframe there
// (navigation.ts openInAirflow) instead of loading Airflow inside the iframe.

import { Link, type LinkProps } from "@chakra-ui/react";
import type { ReactNode } from "react";

import { airflowDagUrl, openInAirflow } from "../navigation";

export type AirflowDagLinkProps = Omit<LinkProps, "href" | "onClick" | "children"> & {
  dagId: string;
  dagRunId?: string;
  children: ReactNode;
};

export function AirflowDagLink({ dagId, dagRunId, children, ...rest }: AirflowDagLinkProps) {
  const url = airflowDagUrl(dagId, dagRunId);
  return (
    <Link
      href={url}
      color="fg.info"
      {...rest}
      onClick={(e) => {
        e.preventDefault();
        openInAirflow(url);
      }}
    >
      {children}
    </Link>
  );
}
