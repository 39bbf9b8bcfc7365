# timeout: 240
# `kill -9` of the hook in the middle of prepare and in the middle of release, on systemd,
# then `kvmtune recover`: no drift. The hook runs as libvirt runs it (`kvmtune hook NAME OP
# SUBOP EXTRA`, the domain XML on stdin) for an isolated, hugepage-backed VM, and is killed
# after a random part of the time an uninterrupted run takes, so kills land anywhere among its
# changes (systemctl calls, pools, IRQs). After each recover: pools, cgroups, units, drop-ins
# under /run/systemd and IRQ defaults as before, and no journal left in /run/kvmtune.
. /hv/guest/lib.sh
domain_xml hv-kill 70 vcpupin=3 emulatorpin=0 huge=64 node=1 'tune=<kvmtune:isolate cpus="vcpus"/>' > /tmp/kill.xml
save_state /tmp/base
ms() { echo $(( $(date +%s%N) / 1000000 )); }
hook() { kvmtune hook hv-kill "$@" < /tmp/kill.xml > /tmp/hook.out 2>&1; }
expect_clean() {
  expect_state /tmp/base "$1"
  local f
  for f in $(ls -A /run/kvmtune 2>/dev/null); do
    case $f in
      lock) ;;
      # Statistics, not state: kvmtune-watch.service counts and notes its looks.
      counters.json | watch.json) ;;
      ledger.json) grep -q hv-kill /run/kvmtune/ledger.json && fail "$1: the ledger still names the VM" ;;
      *) fail "$1: /run/kvmtune holds $f after recover" ;;
    esac
  done
  return 0
}
t0=$(ms); hook prepare begin - || fail "uninterrupted prepare failed: $(cat /tmp/hook.out)"; t1=$(ms)
hook release end destroyed; t2=$(ms)
expect_clean "after an uninterrupted prepare and release"
prep=$((t1 - t0)); rel=$((t2 - t1))
note "uninterrupted: prepare $prep ms, release $rel ms"

# kill_during OP SUBOP EXTRA DURATION: start the hook, kill -9 it after 1/8 to 9/8 of DURATION
# (the delay in $at, in ms).
kill_during() {
  local d=$4 delay
  delay=$(( d / 8 + RANDOM % d ))
  at=$delay
  kvmtune hook hv-kill "$1" "$2" "$3" < /tmp/kill.xml > /tmp/hook.out 2>&1 &
  local pid=$!
  sleep "$(awk -v m="$delay" 'BEGIN{printf "%.3f", m / 1000}')"
  kill -9 $pid 2>/dev/null && killed=$((killed + 1))
  wait $pid 2>/dev/null
}
killed=0
for i in 1 2 3 4; do
  kill_during prepare begin - "$prep"
  kvmtune recover --all > /tmp/recover.out 2>&1 || fail "recover after a kill in prepare (at ${at} ms) exited $?: $(cat /tmp/recover.out)"
  expect_clean "kill in prepare at ${at} ms, then recover"
  hook prepare begin - || fail "prepare for the release kill failed: $(cat /tmp/hook.out)"
  kill_during release end destroyed "$rel"
  kvmtune recover --all > /tmp/recover.out 2>&1 || fail "recover after a kill in release (at ${at} ms) exited $?: $(cat /tmp/recover.out)"
  expect_clean "kill in release at ${at} ms, then recover"
done
note "$killed of 8 hook runs were killed before they ended; each recovered exactly"
