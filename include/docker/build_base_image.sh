#!/usr/bin/env bash
# Build the local base image of the reference trainers without a registry: debootstrap a minimal
# Debian bookworm with Python 3, NumPy, Pillow, SciPy, scikit-learn and PyTorch (CPU) from
# Debian's packages (mirror: the one apt is configured with), slim it, then `docker import` it.
# Idempotent: skips when an image with the same recipe exists; `--force` rebuilds (and retags).
# The image carries the label patient-ml.base-recipe: a hash of the package list, the slim
# switch and this script. An image under the tag with another hash (a package added since it was
# built) is stale and rebuilt, so CI never trains on a cached image without the new packages.
#
#   bash include/docker/build_base_image.sh [--force]
#
# Environment:
#   PATIENT_ML_BASE_IMAGE         tag (default patient-ml/base:bookworm)
#   PATIENT_ML_DEBIAN_MIRROR      Debian mirror (default: from /etc/apt/sources.list[.d])
#   PATIENT_ML_BASE_PACKAGES      comma-separated packages (default below)
#   PATIENT_ML_BASE_SLIM=0        keep what python3-scipy drags in through python3-pythran
#                                 (gcc, g++, Boost and BLAS headers, ~430 MB) and the docs
#
# Slimming: Debian's python3-scipy depends on python3-pythran (a compiler for SciPy's build),
# which depends on g++, libboost-dev, libopenblas-dev, python3-dev. Nothing imports pythran at
# run time, so after debootstrap every package that only that chain needs is purged with
# `dpkg --purge --force-depends` (the image's dpkg database then lists python3-scipy's
# dependency on python3-pythran as unmet; apt-get install in a derived image would pull it
# back), and /usr/share/{doc,man,info,locale} are emptied.
set -euo pipefail

image=${PATIENT_ML_BASE_IMAGE:-patient-ml/base:bookworm}
suite=bookworm
packages=${PATIENT_ML_BASE_PACKAGES:-python3,python3-numpy,python3-pil,python3-scipy,python3-sklearn,python3-torch,libopenblas0-pthread,ca-certificates}
slim=${PATIENT_ML_BASE_SLIM:-1}
force=0
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
  esac
done

say() { echo "build_base_image: $*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { local ms=$(($(now_ms) - $1)); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }

if ! docker info >/dev/null 2>&1; then
  say "no Docker engine answers; run include/docker/start_dockerd.sh first" >&2
  exit 1
fi
recipe=$( { printf '%s\n%s\n' "$packages" "$slim"; cat "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
old_id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
if [[ -n $old_id && $force == 0 ]]; then
  old_recipe=$(docker image inspect -f '{{index .Config.Labels "patient-ml.base-recipe"}}' "$image" 2>/dev/null || true)
  if [[ $old_recipe == "$recipe" ]]; then
    say "$image already exists ($(($(docker image inspect -f '{{.Size}}' "$image") / 1000000)) MB, recipe $recipe); --force rebuilds"
    exit 0
  fi
  say "$image was built from another recipe (${old_recipe:-none}, now $recipe): rebuilding"
fi
for tool in debootstrap tar; do
  command -v "$tool" >/dev/null || { say "$tool missing (start_dockerd.sh installs debootstrap)" >&2; exit 1; }
done

# The Debian mirror apt uses (the only one reachable here): the first source of suite bookworm,
# deb822 (*.sources) or one-line (sources.list, *.list).
detect_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk -v s="$suite" '$1 == "deb" { sub(/\[[^]]*\]/, ""); if ($3 == s) { print $2; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v s="$suite" 'BEGIN { RS = ""; FS = "\n" }
      { uri = ""; ok = 0; enabled = 1
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
          if ($i ~ /^Suites:/) { n = split($i, a, /[ \t]+/); for (j = 2; j <= n; j++) if (a[j] == s) ok = 1 }
          if ($i ~ /^Enabled: *no/) enabled = 0 }
        if (ok && enabled && uri != "") { print uri; exit } }' "$f"
  done
}
mirror=${PATIENT_ML_DEBIAN_MIRROR:-$(detect_mirror | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}

started=$(now_ms)
root=$(mktemp -d /var/tmp/pml-base.XXXXXX)
cleanup() {
  # debootstrap may leave proc/sys (or a bind-mounted /dev) mounted when it fails: unmount
  # before deleting, and never cross into another file system.
  awk -v r="$root" 'index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l || true
  rm -rf --one-file-system "$root"
}
trap cleanup EXIT

dlog=/var/tmp/pml-debootstrap.log
say "debootstrap --variant=minbase --include=$packages $suite $root $mirror (log $dlog)"
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$dlog" 2>&1; then
  say "debootstrap failed; last lines of $dlog:" >&2
  tail -n 30 "$dlog" >&2
  exit 1
fi
say "debootstrap done after $(secs "$started") ($(du -sxm "$root" | cut -f1) MB)"

if [[ $slim == 1 ]]; then
  # Keep what the essential/required/important packages and the requested ones need (first
  # installed alternative of each dependency), without following the dependency on pythran.
  purge=$(PML_KEEP="$packages" chroot "$root" python3 - <<'EOF'
import os, re

pkgs, provides = {}, {}
for stanza in open("/var/lib/dpkg/status", encoding="utf-8").read().split("\n\n"):
    fields = dict(re.findall(r"^([\w-]+): ?(.*)$", stanza, re.M))
    if fields.get("Status", "").endswith(" installed"):
        name = fields["Package"]
        pkgs[name] = fields
        for p in fields.get("Provides", "").split(","):
            if p.strip():
                provides.setdefault(re.split(r"[ (]", p.strip())[0], name)
drop = {"python3-pythran"}
def resolve(alt):
    n = re.split(r"[ (:]", alt.strip())[0]
    return n if n in pkgs else provides.get(n)
roots = {n for n, f in pkgs.items() if f.get("Essential") == "yes" or f.get("Priority") in ("required", "important")}
roots |= {n for n in os.environ["PML_KEEP"].split(",") if n in pkgs}
roots |= {"apt", "python3-distutils"} & pkgs.keys()  # distutils: cheap, still imported at run time by some code
keep, todo = set(), list(roots - drop)
while todo:
    n = todo.pop()
    if n in keep:
        continue
    keep.add(n)
    f = pkgs[n]
    for group in (f.get("Pre-Depends", "") + "," + f.get("Depends", "")).split(","):
        for alt in group.split("|"):
            dep = resolve(alt) if alt.strip() else None
            if dep:
                if dep not in drop:
                    todo.append(dep)
                break
print(" ".join(sorted(set(pkgs) - keep)))
EOF
)
  if [[ -n $purge ]]; then
    say "purging $(wc -w <<<"$purge") packages only python3-pythran needs: $purge"
    # shellcheck disable=SC2086
    chroot "$root" dpkg --purge --force-depends $purge >>"$dlog" 2>&1 \
      || { say "dpkg --purge failed; last lines of $dlog:" >&2; tail -n 30 "$dlog" >&2; exit 1; }
  fi
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
  "$root"/var/log/* "$root"/tmp/* "$root"/root/.cache

t_import=$(now_ms)
tar --numeric-owner -C "$root" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8 PYTHONUNBUFFERED=1' \
  -c 'CMD ["python3"]' \
  -c "LABEL patient-ml.base-recipe=$recipe" \
  -m "debootstrap $suite minbase + $packages (slim=$slim) from $mirror" \
  - "$image" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$image")
say "imported in $(secs "$t_import")"
say "built $image ($((size / 1000000)) MB) in $(secs "$started")"
new_id=$(docker image inspect -f '{{.Id}}' "$image")
if [[ -n $old_id && $old_id != "$new_id" ]]; then
  # the previous build, unless containers or child images still use it
  docker rmi "$old_id" >/dev/null 2>&1 && say "removed the previous build $old_id" || true
fi
