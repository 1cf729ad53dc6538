#!/usr/bin/env bash
# Make a Docker engine available on a machine without one (CI, fresh sandboxes, no systemd):
# install Debian's docker.io (and debootstrap, for build_base_image.sh) when missing, start
# dockerd by hand in the background, wait until it answers. Idempotent: exits 0 at once when
# `docker info` already answers, and only waits when a dockerd is already starting.
#
# Storage driver overlay2, falling back to vfs (slow, but works everywhere) when overlay2 does
# not come up. Default networking (docker0 bridge + iptables NAT) is tried first, because a
# serving container needs published ports; training containers run with --network none anyway.
# Only when dockerd dies on an iptables error is it retried with --iptables=false (published
# ports to 127.0.0.1 then still work through docker-proxy, containers have no outbound NAT).
#
# Environment: PATIENT_ML_DOCKER_STORAGE_DRIVER (default overlay2),
# PATIENT_ML_DOCKERD_LOG (default /var/log/dockerd.log), PATIENT_ML_DOCKERD_TIMEOUT (60 s),
# PATIENT_ML_DOCKERD_ARGS (extra dockerd arguments, word-split).
set -euo pipefail

sock=/var/run/docker.sock
pidfile=/var/run/docker.pid
log=${PATIENT_ML_DOCKERD_LOG:-/var/log/dockerd.log}
timeout=${PATIENT_ML_DOCKERD_TIMEOUT:-60}
driver=${PATIENT_ML_DOCKER_STORAGE_DRIVER:-overlay2}
read -r -a extra <<<"${PATIENT_ML_DOCKERD_ARGS:-}"

say() { echo "start_dockerd: $*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
started=$(now_ms)
elapsed() { local ms=$(($(now_ms) - started)); printf '%d.%03d s' $((ms / 1000)) $((ms % 1000)); }
answers() { docker -H "unix://$sock" info >/dev/null 2>&1; }

if docker info >/dev/null 2>&1; then
  say "Docker engine already answers ($(docker info -f '{{.ServerVersion}}, storage driver {{.Driver}}' 2>/dev/null))"
  exit 0
fi

# Packages: dockerd + CLI (docker.io; a docker CLI elsewhere on PATH, e.g. /usr/local/bin, is fine),
# debootstrap for the base image, iptables for the bridge network.
if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null \
  || ! command -v debootstrap >/dev/null || ! command -v iptables >/dev/null; then
  say "installing docker.io debootstrap iptables ca-certificates with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io debootstrap iptables ca-certificates >/dev/null
  say "packages installed after $(elapsed)"
fi

# cgroups: without systemd nobody may have mounted them (docker.io only recommends cgroupfs-mount).
if [[ -z "$(ls -A /sys/fs/cgroup 2>/dev/null)" ]]; then
  say "mounting cgroup2 on /sys/fs/cgroup"
  mount -t cgroup2 none /sys/fs/cgroup
fi

wait_for() { # pid -> 0 answers, 1 dockerd exited, 2 timeout
  local pid=$1 deadline=$(($(date +%s) + timeout))
  while (($(date +%s) < deadline)); do
    answers && return 0
    kill -0 "$pid" 2>/dev/null || { answers && return 0; return 1; }
    sleep 0.2
  done
  return 2
}

# A dockerd that is already there but not answering yet (another caller started it): wait for it.
if [[ -s $pidfile ]]; then
  old=$(cat "$pidfile")
  if kill -0 "$old" 2>/dev/null && [[ "$(cat "/proc/$old/comm" 2>/dev/null)" == dockerd ]]; then
    say "dockerd (pid $old) is already starting; waiting up to ${timeout} s"
    if wait_for "$old"; then say "Docker engine up after $(elapsed)"; exit 0; fi
    say "dockerd pid $old does not answer; last lines of $log:" >&2
    tail -n 30 "$log" >&2 || true
    exit 1
  fi
  say "removing stale $pidfile (pid $old is gone)"
  rm -f "$pidfile"
fi

mkdir -p "$(dirname "$log")"
: >"$log"
attempt() { # storage driver, extra dockerd args... -> status of wait_for
  local drv=$1
  shift
  echo "=== start_dockerd: dockerd --storage-driver=$drv $* ($(date -u +%FT%TZ))" >>"$log"
  setsid nohup dockerd --storage-driver="$drv" -H "unix://$sock" "$@" "${extra[@]}" \
    >>"$log" 2>&1 </dev/null &
  local pid=$!
  local rc=0
  wait_for "$pid" || rc=$?
  if ((rc == 2)); then # hung: stop the dockerd this script started before the next attempt
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  if ((rc != 0)); then rm -f "$pidfile"; fi
  return "$rc"
}

up() {
  say "Docker engine up after $(elapsed): $(docker -H "unix://$sock" info -f \
    'server {{.ServerVersion}}, storage driver {{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}' 2>/dev/null)"
  say "log: $log; socket: $sock"
  exit 0
}

args=()
say "starting dockerd (storage driver $driver, log $log)"
attempt "$driver" "${args[@]}" && up
if tail -n 40 "$log" | grep -qiE 'failed to start daemon.*(iptables|nat|bridge)'; then
  say "dockerd failed on iptables/bridge setup; retrying with --iptables=false" >&2
  args=(--iptables=false)
  attempt "$driver" "${args[@]}" && up
fi
if [[ "$driver" != vfs ]]; then
  say "storage driver $driver did not come up (see $log); falling back to vfs (slower, more disk)" >&2
  attempt vfs "${args[@]}" && up
fi
say "dockerd did not answer within ${timeout} s; last lines of $log:" >&2
tail -n 30 "$log" >&2 || true
exit 1
