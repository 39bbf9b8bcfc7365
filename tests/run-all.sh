#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need, then runs the tiers of
# DESIGN.md, then the packages, and ends with one line `total: N passed, M failed`.
#   1-2. unit tests, golden trees on the kernel-modelling fake root, the binary's contract
#   3.   the real kernel: a 2- and 3-node Debian guest under QEMU/TCG   (tests/guest/run.sh)
#   4.   the real libvirtd on this machine, kvmtune installed as its hook (tests/libvirt/run.sh)
#   4b.  a Debian 13 hypervisor under QEMU/TCG (systemd, cgroup v2, libvirt 11, a vfio-pci NIC),
#        kvmtune installed from its .deb, real VMs under the guest's libvirtd (tests/hypervisor/run.sh)
#   5.   the packages: the .deb installed with dpkg, tier 4's core run against it, upgrade,
#        purge, the machine as before; the .rpm built and inspected  (tests/package/run.sh)
# Tiers 3 to 5 change the real host (they start daemons, write hugepage pools; 5 installs and
# purges the package); each restores what it changed and stops only the processes it started.
# Last, a short run of the benchmarks on a fake root (bench/run.sh --quick), so they cannot rot.
# Run as root.
set -uo pipefail
cd "$(dirname "$0")/.."

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
passed=0
failed=0
broken=()
times=()   # how long each step took, for keeping the whole run under CI's budget

# count LOG: add the tier's test counts (cargo's "test result:" lines, or the harness's
# closing "N passed, M failed" line) to the totals.
count() {
  local p f
  p=$(grep -hoE '(^|[^0-9])[0-9]+ passed' "$1" | grep -oE '[0-9]+' | paste -sd+ | bc 2>/dev/null || echo 0)
  f=$(grep -hoE '[0-9]+ failed' "$1" | grep -oE '[0-9]+' | paste -sd+ | bc 2>/dev/null || echo 0)
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
}

# tier NAME COMMAND…: run, show output, count; a tier that exits non-zero counts as broken.
tier() {
  local name=$1 t0=$SECONDS
  shift
  echo "=== $name: $*"
  if "$@" 2>&1 | tee "$logs/$name.log"; then
    :
  else
    broken+=("$name")
  fi
  count "$logs/$name.log"
  times+=("$name $((SECONDS - t0)) s")
}

command -v bc >/dev/null || { apt-get update -qq && apt-get install -y -qq bc >/dev/null; }
tier deps tests/deps.sh
tier fmt cargo fmt --all -- --check
tier clippy cargo clippy --all-targets --quiet -- -D warnings
tier unit cargo test --quiet
tier build cargo build --release --quiet
export KVMTUNE_BIN=$PWD/target/release/kvmtune
tier guest tests/guest/run.sh
tier libvirt tests/libvirt/run.sh
tier hypervisor tests/hypervisor/run.sh
tier package tests/package/run.sh
tier bench bench/run.sh --quick

echo
echo "steps: $(printf '%s, ' "${times[@]}" | sed 's/, $//'); all $SECONDS s"
if [ ${#broken[@]} -gt 0 ]; then
  echo "failed steps: ${broken[*]}"
  [ "$failed" -gt 0 ] || failed=${#broken[@]}
fi
echo "total: $passed passed, $failed failed"
[ ${#broken[@]} -eq 0 ] && [ "$failed" -eq 0 ]
