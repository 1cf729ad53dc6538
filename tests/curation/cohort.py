"""A small synthetic cohort in the data contract's shape: real PNG files, DocumentReferences,
label Observations, and one record for every way a record can go wrong."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from PIL import Image

from patient_ml.fhir import mapping

CODE_SYSTEM = "http://loinc.org"


def png(seed: int, size: tuple[int, int] = (24, 24)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0]), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


@dataclass
class Cohort:
    root: Path
    code: str  # DocumentReference.type code of this cohort
    label_system: str
    docs: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    raw_lines: list[bytes] = field(default_factory=list)  # broken DocumentReference lines
    expected_reasons: dict[str, int] = field(default_factory=dict)  # reason -> count
    good_ids: set[str] = field(default_factory=set)

    @property
    def images(self) -> Path:
        return self.root / "images"

    def _write_image(self, name: str, data: bytes) -> str:
        self.images.mkdir(parents=True, exist_ok=True)
        path = self.images / name
        path.write_bytes(data)
        return f"file://{path}"

    def doc(
        self,
        doc_id: str,
        patient: str,
        *,
        data: bytes | None = None,
        url: str | None = None,
        content_type: str | None = "image/png",
        **overrides: Any,
    ) -> dict[str, Any]:
        if url is None and data is not None:
            url = self._write_image(f"{doc_id}.png", data)
        attachment: dict[str, Any] = {"url": url} if url else {}
        if content_type:
            attachment["contentType"] = content_type
        resource = {
            "resourceType": "DocumentReference",
            "id": doc_id,
            "status": "current",
            "type": {"coding": [{"system": CODE_SYSTEM, "code": self.code}]},
            "subject": {"reference": f"Patient/{patient}"},
            "content": [{"attachment": attachment}],
        }
        resource.update(overrides)
        self.docs.append(resource)
        return resource

    def label(
        self, obs_id: str, doc_id: str, index: int | str, status: str = "final"
    ) -> dict[str, Any]:
        resource = {
            "resourceType": "Observation",
            "id": obs_id,
            "status": status,
            "code": {"coding": [{"system": mapping.LABEL_CODE_SYSTEM, "code": mapping.LABEL_CODE}]},
            "focus": [{"reference": f"DocumentReference/{doc_id}"}],
            "valueCodeableConcept": {"coding": [{"system": self.label_system, "code": str(index)}]},
            "performer": [{"display": "Dr. Test"}],
        }
        self.observations.append(resource)
        return resource

    def add_patients(self, start: int, count: int, images_each: int = 2) -> None:
        """Good examples: patient pN with images dN-k, labels final (most), draft or none."""
        for p in range(start, start + count):
            for k in range(images_each):
                doc_id = f"d{p:04d}-{k}"
                self.doc(doc_id, f"p{p:04d}", data=png(p * 100 + k))
                self.good_ids.add(doc_id)
                if (p + k) % 7 == 3:
                    continue  # unlabelled
                status = "preliminary" if (p + k) % 5 == 1 else "final"
                self.label(f"o{p:04d}-{k}", doc_id, (p + k) % 2, status)

    def expect(self, reason: str, count: int = 1) -> None:
        self.expected_reasons[reason] = self.expected_reasons.get(reason, 0) + count

    def add_bad_records(self, outside_dir: Path) -> None:
        """One record for each quarantine reason a file-based source can produce."""
        self.raw_lines.append(b'{"resourceType": "DocumentReference", "id": ')
        self.expect("malformed_json")
        self.raw_lines.append(b'["not", "a", "resource"]')
        self.expect("not_a_resource")
        self.raw_lines.append(orjson.dumps({"resourceType": "Patient", "id": "px"}))
        self.expect("wrong_resource_type")
        self.doc("", "p9000", data=png(9000), id=None)
        self.docs[-1].pop("id")
        self.expect("missing_id")
        self.doc("bad-no-subject", "p9001", data=png(9001), subject=None)
        self.docs[-1].pop("subject")
        self.expect("missing_subject")
        self.doc("bad-subject", "p9002", data=png(9002), subject={"reference": "Group/g1"})
        self.expect("subject_not_patient")
        self.doc("bad-no-attachment", "p9003", url=None)
        self.expect("missing_attachment")
        self.doc("bad-gif", "p9004", data=png(9004), content_type="image/gif")
        self.expect("unsupported_content_type")
        self.doc("bad-http", "p9005", url="http://images.example.org/x.png")
        self.expect("url_not_allowed")
        outside_dir.mkdir(parents=True, exist_ok=True)
        (outside_dir / "x.png").write_bytes(png(9006))
        self.doc("bad-outside", "p9006", url=f"file://{outside_dir}/x.png")
        self.expect("path_outside_allowed_roots")
        self.doc("bad-missing", "p9007", url=f"file://{self.images}/nope.png")
        self.expect("image_not_found")
        self.doc("bad-big", "p9008", data=png(9008, (200, 200)))  # ~40 kB > maxImageBytes
        self.expect("image_too_large")
        bad_inline = self.doc("bad-inline", "p9009", url=None)
        bad_inline["content"][0]["attachment"]["data"] = "%%%not base64%%%"
        self.expect("invalid_inline_data")
        self.doc("bad-garbage", "p9010", data=b"this is not an image at all" * 10)
        self.expect("image_decode_failed")
        whole = png(9011, (30, 30))
        self.doc("bad-truncated", "p9011", data=whole[: len(whole) // 2])
        self.expect("image_truncated")
        self.doc("bad-mismatch", "p9012", data=png(9012), content_type="image/jpeg")
        self.expect("image_format_mismatch")
        self.doc("bad-huge", "p9013", data=png(9013, (120, 10)))  # 1,200 px > maxImagePixels
        self.expect("image_too_many_pixels")
        self.doc("bad-small", "p9014", data=png(9014, (24, 4)))
        self.expect("image_too_small")
        # Labels: malformed, unknown class, conflicting confirmed labels.
        self.doc("lbl-target", "p9100", data=png(9100))
        self.good_ids.add("lbl-target")
        broken = self.label("lbl-malformed", "lbl-target", 0)
        broken.pop("focus")
        self.expect("label_malformed")
        self.label("lbl-unknown", "lbl-target", 7)
        self.expect("label_unknown_class")
        self.doc("lbl-conflict", "p9101", data=png(9101))
        self.label("lbl-c1", "lbl-conflict", 0)
        self.label("lbl-c2", "lbl-conflict", 1)
        self.expect("conflicting_labels")
        # The same image bytes under a second record of the same patient: one example.
        same = png(9200)
        self.doc("dup-a", "p9200", data=same)
        self.doc("dup-b", "p9200", url=self._write_image("dup-b.png", same))
        self.good_ids.add("dup-a")
        self.expect("duplicate_image")
        # Inline data is fine when valid.
        ok_inline = self.doc("ok-inline", "p9300", url=None)
        ok_inline["content"][0]["attachment"]["data"] = base64.b64encode(png(9300)).decode()
        self.good_ids.add("ok-inline")
        # Not selected (another type code) and excluded by status: neither counted as bad.
        self.doc("other-type", "p9400", data=png(9400))["type"]["coding"][0]["code"] = "other"
        self.doc("superseded", "p9401", data=png(9401), status="superseded")

    def write_ndjson(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        lines = [orjson.dumps(d) for d in self.docs] + self.raw_lines
        (folder / "DocumentReference.ndjson").write_bytes(b"\n".join(lines) + b"\n")
        obs = b"\n".join(orjson.dumps(o) for o in self.observations) + b"\n"
        (folder / "Observation.ndjson").write_bytes(obs)
        return folder

    def transaction(self) -> dict[str, Any]:
        """A transaction Bundle (PUT by id) of the well-formed resources, for a FHIR server."""
        entries = []
        patients = sorted(
            {d["subject"]["reference"] for d in self.docs if "subject" in d and "id" in d}
        )
        for ref in patients:
            kind, pid = ref.split("/")
            if kind == "Patient":
                resource = {"resourceType": "Patient", "id": pid}
                entries.append(
                    {"resource": resource, "request": {"method": "PUT", "url": f"Patient/{pid}"}}
                )
        for resource in [*self.docs, *self.observations]:
            if not resource.get("id") or resource["id"] == "bad-inline":
                continue  # a FHIR server refuses these (no id, invalid base64)
            subject = resource.get("subject", {}).get("reference", "Patient/")
            if not subject.startswith("Patient/"):
                continue
            url = f"{resource['resourceType']}/{resource['id']}"
            entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def dataset_config(name: str, code: str, **curation: Any) -> dict[str, Any]:
    return {
        "name": name,
        "problemDefinition": {
            "problemType": "imgClf",
            "labelDefinition": {
                "labels": [{"name": "negative", "index": 0}, {"name": "positive", "index": 1}]
            },
            "labelSystem": f"urn:test:{name}",
            "trainingDataFilter": {
                "filterType": "FhirCodesFilter",
                "codes": [f"{CODE_SYSTEM}|{code}"],
            },
        },
        "curation": {
            "splitRatios": {"train": 0.6, "validation": 0.2, "test": 0.2},
            "maxImageBytes": 20_000,
            "maxImagePixels": 1_000,
            "minImageSide": 8,
            **curation,
        },
        "source": {"type": "ndjson", "uri": "file:///unused"},
    }
