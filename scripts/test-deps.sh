#!/usr/bin/env bash
# Install the real servers and tools the test suite starts (Debian packages), or fail naming
# what is missing. Called by `make test` before pytest; safe to run again (installs nothing
# when everything is there).
#
#   scripts/test-deps.sh          # check, and install what is missing (apt-get; sudo when not root)
#   scripts/test-deps.sh --check  # only check: exit 1 naming what is missing
#
# Debian's packages start their services on install (prometheus on :9090, the pushgateway on
# :9091, sshd on :22). The tests run their own on free ports, so nothing is started here: a
# policy-rc.d that refuses every start is in place for the length of the install, the standard
# Debian way. Nothing is ever killed by name.
set -euo pipefail

# package -> a command it provides (what the tests look for)
PACKAGES=(
  "openssh-server:/usr/sbin/sshd"
  "openssh-client:ssh-agent"
  "shellcheck:shellcheck"
  "prometheus:prometheus"
  "prometheus-pushgateway:prometheus-pushgateway"
  "curl:curl"
  "make:make"
  "slurmctld:slurmctld"
  "slurmd:slurmd"
  "slurm-client:scontrol"
  "munge:munged"
)

missing=()
for entry in "${PACKAGES[@]}"; do
  package="${entry%%:*}"
  command="${entry#*:}"
  if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "$command" ]; then
    missing+=("$package")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "test-deps: missing Debian packages: ${missing[*]} (scripts/test-deps.sh installs them)" >&2
  exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "test-deps: missing Debian packages: ${missing[*]}; not root and no sudo to install them" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: missing packages: ${missing[*]}; no apt-get here: install them with your package manager" >&2
  exit 1
fi

echo "test-deps: installing ${missing[*]}" >&2
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  # 101: "action forbidden by policy": invoke-rc.d starts no service while it is there.
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [ "$own_policy" -eq 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

still=()
for entry in "${PACKAGES[@]}"; do
  command="${entry#*:}"
  if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "$command" ]; then
    still+=("${entry%%:*}")
  fi
done
if [ "${#still[@]}" -gt 0 ]; then
  echo "test-deps: still missing after install: ${still[*]}" >&2
  exit 1
fi
