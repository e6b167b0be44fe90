#!/usr/bin/env bash
# Device check for the collector's NVML path, on a machine with a real NVIDIA GPU (H200).
#
# Needs: python3 (3.10+) with nvidia-ml-py, psutil, httpx, click, pyyaml, orjson, and the
# flow source tree on PYTHONPATH (e.g. PYTHONPATH=src:.whl/orjson.whl:...). No GPUd: the
# collector falls back to NVML. Runs in well under 60 s; writes only under a temp dir.
#
#   scripts/device_check.sh            # from the repository root
#
# Prints: one JSON line per GPU from the NVML reader; the `--once` snapshot (GPUd absent)
# and its verdict; then ~5 daemon cycles at 1 s and the store's stats.
set -euo pipefail

PY="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src"
WORK="$(mktemp -d -t flow-device-check-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export FLOW_HOME="$WORK/home"
export FLOW_METRICS_DIR="$WORK/metrics"
export FLOW_TASK_ID="device-check"
export FLOW_INSTANCE_TYPE="${FLOW_INSTANCE_TYPE:-h200}"
# A closed local port stands for "GPUd absent" (nothing listens there).
FLOW_GPUD_PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export FLOW_GPUD_PORT
unset FLOW_METRICS_ENDPOINT FLOW_METRICS_AUTH_TOKEN || true

echo "== python and packages"
"$PY" - <<'PYEOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("pynvml", "psutil", "httpx", "click", "yaml", "orjson"):
    try:
        mod = importlib.import_module(name)
        print(f"  {name:8} {getattr(mod, '__version__', 'ok')}")
    except ImportError as exc:
        print(f"  {name:8} MISSING ({exc})")
PYEOF

echo "== 1. NVML reader: one JSON line per GPU"
STATUS=0
timeout 30 "$PY" - <<'PYEOF' || STATUS=1
import json, sys, time
from flow.health.collector.nvml import NvmlReader, NvmlUnavailable

reader = NvmlReader()
try:
    reader.open()
except NvmlUnavailable as exc:
    print(f"NVML absent: {exc}")
    sys.exit(1)
print(f"driver {reader.driver_version}, CUDA {reader.cuda_version}")
started = time.perf_counter()
gpus = reader.read_gpus()
elapsed_ms = (time.perf_counter() - started) * 1000
for gpu in gpus:
    print(json.dumps(gpu.to_dict(), sort_keys=False))
none = sorted({k for g in gpus for k, v in g.to_dict().items() if v is None})
print(f"{len(gpus)} GPU(s) read in {elapsed_ms:.1f} ms; readings None on some GPU: {', '.join(none) or 'none'}")
reader.close()
PYEOF

echo "== 2. flow health collect --once (GPUd absent: NVML fallback)"
timeout 30 "$PY" -m flow.cli.collect_cmd --once --log-level info > "$WORK/once.json"
"$PY" - "$WORK/once.json" <<'PYEOF'
import json, sys
snap = json.load(open(sys.argv[1]))
print(json.dumps(snap, indent=2)[:6000])
g = snap["gpud"]
print(f"gpud: reachable={g['reachable']} state={g['state']} driver={g['driver_version']} error={g['error']}")
v = snap["verdict"]
print(f"verdict: status={v['status']} score={v['score']}")
for r in v["reasons"]:
    print(f"  - [{r['severity']}] {r['code']}: {r['message']}")
PYEOF

echo "== 3. daemon: ~5 cycles at 1 s (after start-up), then the store's stats"
FLOW_METRICS_INTERVAL=1 timeout 20 "$PY" -m flow.cli.collect_cmd --log-level info &
PID=$!
sleep 7
# The daemon's CPU time so far (utime + stime, in clock ticks): CPU per cycle on this node.
CPU_TICKS="$(awk '{print $14 + $15}' "/proc/$PID/stat")"
echo "daemon CPU: $CPU_TICKS ticks of 1/$(getconf CLK_TCK) s (includes start-up)"
kill -TERM "$PID"
if wait "$PID"; then echo "daemon exit status 0"; else echo "daemon exit status $?"; STATUS=1; fi
"$PY" - <<'PYEOF'
import os
from pathlib import Path
from flow.health.storage.store import MetricsStore

store = MetricsStore(Path(os.environ["FLOW_METRICS_DIR"]), 7, 1, auto_cleanup=False)
print(store.stats())
snaps = list(store.read_snapshots(task_id="device-check"))
print(f"{len(snaps)} snapshots; states: {sorted({s.gpud.state for s in snaps})}; "
      f"verdicts: {[str(s.status) for s in snaps]}; GPUs per snapshot: {[len(s.gpus) for s in snaps]}")
PYEOF
echo "== done (exit $STATUS: 0 when NVML read the GPUs)"
exit "$STATUS"
