#!/usr/bin/env bash
# Build the local base image of the reference trainers without a registry:
# debootstrap a minimal Debian bookworm with Python, NumPy, Pillow and SciPy from Debian's
# packages, then `docker import` it. Skips when the image exists (pass --force to rebuild).
set -euo pipefail
image=${PATIENT_ML_BASE_IMAGE:-patient-ml/base:bookworm}
if [[ "${1:-}" != "--force" ]] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image already exists"; exit 0
fi
mirror=${PATIENT_ML_DEBIAN_MIRROR:-$(grep -hoE '^URIs: *\S+/debian$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}')}
mirror=${mirror:-http://deb.debian.org/debian}
started=$(date +%s)
root=$(mktemp -d /tmp/pml-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-numpy,python3-pil,python3-scipy,ca-certificates \
  bookworm "$root" "$mirror" >/tmp/pml-debootstrap.log 2>&1 || { tail -n 30 /tmp/pml-debootstrap.log >&2; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'ENV PYTHONUNBUFFERED=1' - "$image" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$image")
echo "built $image ($(( size / 1000000 )) MB) in $(( $(date +%s) - started )) s"
