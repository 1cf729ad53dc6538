"""A lineage graph (Mermaid) from OpenLineage events: what read and wrote what.

    .venv/bin/python include/lineage_graph.py EVENTS.jsonl [--dag DAG_ID] > lineage.md

Reads the JSON lines of OpenLineage's file transport (the e2e tests' and `make demo`'s
`openlineage/events.jsonl`), keeps the COMPLETE events, and prints a Mermaid flowchart: each
task once, each dataset once (by namespace and name), labelled by Patient ML's facets (FHIR
source, snapshot and its hash, model artifact and its run, endpoint). MkDocs Material and
GitHub draw Mermaid blocks as pictures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Patient ML's dataset facets, in the order a label is looked for, and how each reads
_LABELS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("patientMl_fhirSource",
     lambda f: f"FHIR source<br/>{f.get('datasetName', '')} ({f.get('sourceType', '')})"),
    ("patientMl_snapshot",
     lambda f: f"snapshot {f['snapshotId'][:12]}<br/>{f.get('exampleCount', '?')} examples"),
    ("patientMl_endpoint",
     lambda f: f"endpoint ({f.get('deployType', '')})<br/>run {f['runId'][:8]}"),
    ("patientMl_modelArtifact",
     lambda f: f"model artifact<br/>run {f['runId'][:8]}, sha256 {f.get('sha256', '')[:8]}"),
)  # fmt: skip


def _label(dataset: dict[str, Any]) -> str:
    facets = dataset.get("facets") or {}
    for name, label in _LABELS:
        if name in facets:
            return label(facets[name])
    return f"{dataset['namespace']}<br/>{dataset['name']}"


def mermaid(events: Iterable[dict[str, Any]], dag_id: str | None = None) -> str:
    ids: dict[str, str] = {}  # key -> Mermaid id
    nodes: list[str] = []
    edges: set[tuple[str, str]] = set()

    def node(key: str, label: str, shape: tuple[str, str]) -> str:
        if key not in ids:
            ids[key] = f"n{len(ids)}"
            text = label.replace('"', "'")
            nodes.append(f'{ids[key]}{shape[0]}"{text}"{shape[1]}')
        return ids[key]

    for event in events:
        job = event["job"]["name"]
        if event.get("eventType") != "COMPLETE" or (dag_id and not job.startswith(f"{dag_id}.")):
            continue
        if not event.get("inputs") and not event.get("outputs"):
            continue
        task = node(f"job:{job}", job.split(".", 1)[-1], ("[", "]"))
        for side in ("inputs", "outputs"):
            for dataset in event.get(side) or []:
                key = f"ds:{dataset['namespace']}|{dataset['name']}"
                data = node(key, _label(dataset), ("[(", ")]"))
                edges.add((data, task) if side == "inputs" else (task, data))
    lines = ["flowchart LR"]
    lines += [f"  {n}" for n in nodes]
    lines += [f"  {a} --> {b}" for a, b in sorted(edges)]
    return "\n".join(lines) + "\n"


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("events", type=Path, help="JSON lines of OpenLineage events")
    parser.add_argument("--dag", help="only this DAG's tasks")
    args = parser.parse_args(argv)
    sys.stdout.write("```mermaid\n" + mermaid(read_events(args.events), args.dag) + "```\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
