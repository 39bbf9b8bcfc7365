#!/usr/bin/env bash
# kvmtune's benchmarks, with one command. Writes BENCHMARKS.md, bench/*.svg and the raw
# numbers in bench/results/*.json.
#
#   bench/run.sh [--quick] [--only SECTIONS] [--keep]
#
#   (default)   every section: 1 hook overhead, 4 scale and 6 the watcher's idle cost on a fake
#               root; 2 hugepages on this host and in the test guest, 3 isolation on this host,
#               3b the isolation methods side by side in the Debian 13 hypervisor guest, 5 VM
#               starts through the real libvirtd. Root; the real-host sections take the host lock
#               (/run/lock/kvmtune-real-host.lock) and restore what they change. About 40 min.
#   --quick     sections 1, 4 and 6 only, fewer rounds, written to a temporary directory (the
#               committed BENCHMARKS.md is left alone) and checked: the numbers must be there and
#               loosely within their targets. What tests/run-all.sh runs. About a minute.
#   --only L    a comma-separated subset of hook,scale,watch,hugepages,isolation,hypervisor,guest,
#               libvirt; the results of the others already in bench/results are kept in the
#               report. `partition` (part of scale): only section 4's points on the host with
#               isolated partitions.
#   --keep      keep the temporary directory of a quick run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
quick=0
keep=0
only=hook,scale,watch,hugepages,isolation,hypervisor,guest,libvirt
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1; only=hook,scale,watch ;;
    --only) only=$2; shift ;;
    --keep) keep=1 ;;
    *) echo "usage: bench/run.sh [--quick] [--only hook,scale,partition,watch,hugepages,isolation,hypervisor,guest,libvirt] [--keep]" >&2; exit 2 ;;
  esac
  shift
done
wants() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
log() { printf 'bench: %s\n' "$*" >&2; }

tmp=$(mktemp -d /tmp/kvmtune-bench.XXXXXX)
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=$tmp
work=$(mktemp -d "$shm/kvmtune-bench-fake.XXXXXX")
cleanup() {
  rm -rf "$work"
  if [ "$keep" = 1 ]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
if [ "$quick" = 1 ]; then
  results=$tmp/results
  out=$tmp
else
  results=$repo/bench/results
  out=$repo
fi
mkdir -p "$results"

# ---- build
command -v gcc >/dev/null || { apt-get update -qq && apt-get install -y -qq gcc >/dev/null; }
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
log "building (cargo build --release, cargo build --release --example fakehost)"
cargo build --release --quiet
cargo build --release --quiet --example fakehost
kvmtune=${CARGO_TARGET_DIR:-$repo/target}/release/kvmtune
fakehost=${CARGO_TARGET_DIR:-$repo/target}/release/examples/fakehost
gcc -O2 -static -o "$tmp/noop" bench/noop.c

# ---- the machine
machine() {
  python3 - "$@" <<'PY'
import json, os, platform, subprocess, sys, datetime
path, load_key = sys.argv[1], sys.argv[2]
try:
    m = json.load(open(path))
except (OSError, ValueError):
    m = {}
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""
if load_key == "load_start":
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    m.update({
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": round(int(sh("awk '/MemTotal/{print $2}' /proc/meminfo") or 0) / 1048576),
        "nodes": sh("cat /sys/devices/system/node/online"),
        "kernel": platform.release(),
        "cgroups": "v1 cpuset + v2 (hybrid)" if os.path.exists("/sys/fs/cgroup/cpuset/cpuset.cpus") else "v2",
        "commit": sh("git rev-parse --short HEAD") + (" (modified)" if sh("git status --porcelain -- src Cargo.toml") else ""),
        "rustc": sh("rustc --version"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    })
m[load_key] = " ".join(open("/proc/loadavg").read().split()[:3])
json.dump(m, open(path, "w"), indent=1)
PY
}
machine "$results/machine.json" load_start

failed=()
# ---- 1 and 4: the fake root
sections=()
wants hook && sections+=(--only hook)
wants scale && sections+=(--only scale)
wants partition && sections+=(--only partition)
if [ ${#sections[@]} -gt 0 ]; then
  log "fake root: ${sections[*]}"
  quick_flag=()
  [ "$quick" = 1 ] && quick_flag=(--quick)
  if "$fakehost" run "${quick_flag[@]}" "${sections[@]}" --out "$tmp/fakehost.json" --kvmtune "$kvmtune" \
    --noop "$tmp/noop" --shell "$repo/bench/shell" --workdir "$work"; then
    # Merge into earlier results, so that --only hook keeps the last scale numbers (and
    # --only partition the rest of scale's).
    python3 - "$results/fakehost.json" "$tmp/fakehost.json" <<'PY'
import json, sys
try:
    old = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    old = {}
def merge(into, new):
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict) and k in ("scale", "sweeps"):
            merge(into[k], v)
        else:
            into[k] = v
merge(old, json.load(open(sys.argv[2])))
json.dump(old, open(sys.argv[1], "w"), indent=1)
PY
  else
    failed+=(fakehost)
  fi
fi

# ---- 6: the watcher's idle cost, on the fake root
if wants watch; then
  passes=2400
  [ "$quick" = 1 ] && passes=600
  log "watch: $passes looks of kvmtune watch, then of irq-watch"
  if "$fakehost" watch-cost --passes "$passes" --workdir "$work/watch" --out "$tmp/watch-new.json" \
    && "$fakehost" watch-cost --irq-watch --passes "$passes" --workdir "$work/watch" --out "$tmp/irq-watch.json"; then
    python3 - "$results/watch.json" "$tmp/watch-new.json" "$tmp/irq-watch.json" <<'PY'
import datetime, json, subprocess, sys
out, watch, irq = sys.argv[1:]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
json.dump({
    "watch": json.load(open(watch)),
    "irq_watch": json.load(open(irq)),
    "commit": commit,
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "load": " ".join(open("/proc/loadavg").read().split()[:3]),
}, open(out, "w"), indent=1)
PY
  else
    failed+=(watch)
  fi
fi

# ---- 2, 3, 5: real kernels
real() {  # real NAME SCRIPT ARGS…: run a real-kernel section into results/NAME.json
  local name=$1
  shift
  log "$name: $*"
  if KVMTUNE_BIN=$kvmtune "$@" "$tmp/$name.json"; then
    mv "$tmp/$name.json" "$results/$name.json"
  else
    failed+=("$name")
  fi
}
if [ "$quick" = 0 ] && { wants isolation || wants hypervisor || wants hugepages || wants libvirt || wants guest; }; then
  [ "$(id -u)" = 0 ] || { log "the real-kernel sections need root"; exit 1; }
  wants isolation && real isolation bench/isolation.sh
  wants hypervisor && real hypervisor-isolation bench/hypervisor.sh
  wants hugepages && real hugepages-host bench/hugepages.sh
  wants libvirt && real libvirt bench/libvirt.sh
  wants guest && real hugepages-guest bench/guest.sh
fi
machine "$results/machine.json" load_end

# ---- the report
check=()
[ "$quick" = 1 ] && check=(--check)
python3 bench/report.py "$results" "$out" "${check[@]}" || failed+=(report)
if [ ${#failed[@]} -gt 0 ]; then
  log "failed: ${failed[*]}"
  exit 1
fi
