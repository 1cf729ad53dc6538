#!/usr/bin/env bash
# Make a Docker engine available on a machine without one (CI, fresh sandboxes):
# install Debian's docker.io if dockerd is missing, start dockerd by hand (no systemd), wait.
# Idempotent: does nothing when `docker info` already answers.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  echo "docker engine already running"; exit 0
fi
started=$(date +%s)
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io debootstrap iptables ca-certificates >/dev/null
fi
log=/var/log/dockerd.log
driver=${PATIENT_ML_DOCKER_STORAGE_DRIVER:-overlay2}
setsid nohup dockerd --storage-driver="$driver" >"$log" 2>&1 < /dev/null &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "docker engine up (storage driver $driver) in $(( $(date +%s) - started )) s"; exit 0
  fi
  sleep 1
done
echo "dockerd did not answer within 60 s; last lines of $log:" >&2
tail -n 30 "$log" >&2
exit 1
