"""FHIR search: every page of a search (`_count` = page_size, `link[next]` on the same server
only), with `Prefer: handling=strict` so a server that does not know a search parameter refuses
the search instead of silently ignoring the filter and returning everything."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urljoin

from patient_ml.config.duplicates import has_duplicate_keys, json_duplicate_keys, loads_json
from patient_ml.fhir.errors import FhirError
from patient_ml.fhir.transport import FhirTransport, check_type

log = logging.getLogger("patient_ml.fhir")

LOG_EVERY_PAGES = 5


def query_pairs(
    params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None,
) -> list[tuple[str, str]]:
    if params is None:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        values = value if isinstance(value, list | tuple) else [value]
        pairs.extend((str(key), str(v)) for v in values if v is not None)
    return pairs


class DuplicateKeyResource(dict[str, Any]):
    """A resource of a search page in which a key appears twice in one object (JSON gives no
    dict subclass, so a server cannot forge one); `duplicates` holds a FieldError per key."""

    duplicates: list[Any]


def mark_duplicate_keys(content: bytes, bundle: dict[str, Any]) -> None:
    """Replace each entry resource of `bundle` (parsed from `content`) that held a key twice
    by a DuplicateKeyResource, so that curation quarantines it (`duplicate_key`)."""
    if not has_duplicate_keys(content, bundle):
        return
    entries = bundle.get("entry")
    reparsed = loads_json(content)
    again = reparsed.get("entry") if isinstance(reparsed, dict) else None
    if not isinstance(entries, list) or not isinstance(again, list) or len(again) != len(entries):
        return
    for entry, checked in zip(entries, again, strict=True):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        source = checked.get("resource") if isinstance(checked, dict) else None
        found = json_duplicate_keys(source) if isinstance(source, dict) else []
        if found and isinstance(resource, dict):
            marked = DuplicateKeyResource(resource)
            marked.duplicates = found
            entry["resource"] = marked


class FhirSearch(FhirTransport):
    """Search interactions of a FHIR client."""

    def search_pages(
        self,
        resource_type: str,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every searchset Bundle of a search, following `link[next]` on this server."""
        query = query_pairs(params)
        if not any(key == "_count" for key, _ in query):
            query.append(("_count", str(self.page_size)))
        headers = {"Prefer": "handling=strict"} if self.strict_search else {}
        url = self.url(check_type(resource_type))
        seen: set[str] = set()
        first = True
        while True:
            resp = self.request("GET", url, params=query if first else None, headers=headers)
            bundle = self._expect_type(
                self._json(resp, "GET", url), "Bundle", f"search {resource_type}"
            )
            mark_duplicate_keys(resp.content, bundle)
            seen.add(resp.url)
            yield bundle
            next_link = next(
                (
                    link.get("url")
                    for link in bundle.get("link") or []
                    if isinstance(link, dict) and link.get("relation") == "next"
                ),
                None,
            )
            if not next_link:
                return
            url = urljoin(resp.url, str(next_link))
            self._require_same_origin(url, f"{resource_type} search's next-page link")
            if url in seen:
                raise FhirError(
                    f"FHIR search {resource_type}: the next-page link repeats a page already "
                    f"read ({len(seen)} pages so far).",
                    fix="the server's paging is broken; report it to the server's operators",
                )
            first = False

    def search(
        self,
        resource_type: str,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        *,
        modes: Collection[str] = ("match",),
    ) -> Iterator[dict[str, Any]]:
        """Every resource of every page whose `search.mode` is in `modes` (missing = match)."""
        started = time.monotonic()
        pages = count = 0
        for bundle in self.search_pages(resource_type, params):
            pages += 1
            if pages == 1 and isinstance(bundle.get("total"), int):
                log.info("FHIR search %s: %d matches on the server", resource_type, bundle["total"])
            issues = 0
            for entry in bundle.get("entry") or []:
                if not isinstance(entry, dict):
                    continue
                mode = (entry.get("search") or {}).get("mode") or "match"
                resource = entry.get("resource")
                if mode == "outcome" and isinstance(resource, dict):
                    issues += len(resource.get("issue") or [])
                if mode in modes and isinstance(resource, dict):
                    count += 1
                    yield resource
            if issues:
                log.warning(
                    "FHIR search %s: the server reported %d issue(s) on page %d",
                    resource_type, issues, pages,
                )  # fmt: skip
            if pages % LOG_EVERY_PAGES == 0:
                self._log_progress(f"FHIR search {resource_type}", pages, count, started)
        self._log_progress(f"FHIR search {resource_type} done", pages, count, started)

    @staticmethod
    def _log_progress(what: str, pages: int, count: int, started: float) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        log.info(
            "%s: %d pages, %d resources in %.1f s (%.0f/s)",
            what, pages, count, elapsed, count / elapsed,
        )  # fmt: skip
