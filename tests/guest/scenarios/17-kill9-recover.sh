# topologies: 3node
# kill -9 of kvmtune at random moments of prepare and release, over and over, each followed by
# `kvmtune recover`: the host must come back exactly every time. Every third iteration the VM is
# tuned in every way at once: 128 x 2 MiB pages on node 1, CPU 2 isolated (cgroup v2,
# housekeeping 0-1), the guest's virtio-rng as its passthrough device with its IRQs on CPU 2
# (set at `started`, so the release iterations start from a VM that has been through prepare
# and started); the others use the same VM without isolation (pages and IRQs only), which is
# several times quicker on TCG, so that more kills land.
# The kill lands after a random delay between a quarter of the time an uninterrupted run of
# that operation took and a quarter more than it, so it falls anywhere in its changes (or just
# after it: then recover releases a VM whose QEMU does not run). After each recover: every pool, every IRQ affinity and
# default_smp_affinity, every cgroup and cpuset, every host task's cgroup and CPUs as before,
# and no journal or temp file in the state directory. Iterations go on while the next one
# still fits in the scenario's 60 s (at most 50); on an idle machine that is a dozen or more.
t_scenario=$(awk '{ split($1, t, "."); print t[1] * 100 + substr(t[2] "00", 1, 2) }' /proc/uptime)
. /tests/lib.sh
. /tests/isolation.sh
. /tests/irq.sh
cleanup() { iso_cleanup; driver_unload >/dev/null 2>&1; return 0; }
trap cleanup EXIT

taskset -p -c 0-3 $$ >/dev/null
driver_loaded || driver_load
devirqs=$(dev_irqs)
note "device $DEV_BDF: IRQs [$devirqs]"
iso_policy 0-1

irqdom /tmp/full.xml s17-full vcpus vcpus 2
irqdom /tmp/light.xml s17-light vcpus - 2
# Hugepage-backed too: 256 MiB on node 1.
for x in /tmp/full.xml /tmp/light.xml; do
  sed -i "s|<vcpu placement|<memoryBacking><hugepages/></memoryBacking><numatune><memory mode='strict' nodeset='1'/></numatune><vcpu placement|" $x
  grep -q "<hugepages/>" $x || fail "harness: no memoryBacking in $x"
done
RELEASED_VMS="s17-full s17-light"

save_snapshot /tmp/base.pools
iso_snapshot /tmp/base
irq_snapshot /tmp/base.irq

cs() { awk '{ split($1, t, "."); print t[1] * 100 + substr(t[2] "00", 1, 2) }' /proc/uptime; }   # centiseconds
rand() { echo $(( $(od -An -N2 -tu2 /dev/urandom) % ($1 + 1) )); }
vm=s17-full
kt() { taskset -c 0 "$KT" hook $vm "$@" < /tmp/${vm#s17-}.xml > /tmp/kt.out 2> /tmp/kt.err; }

# expect_base WHAT: the host as before the VM, the state directory clean (every task's cgroup
# and CPUs too after an iteration of the isolated VM).
expect_base() {
  expect_snapshot /tmp/base.pools "$1" > /dev/null
  irq_expect_same /tmp/base.irq "$1" > /dev/null
  [ $vm = s17-light ] || iso_expect_same /tmp/base "$1" > /dev/null
  for f in $(ls -A "$STATE_DIR" 2>/dev/null); do
    case $f in
      lock) ;;
      ledger.json) grep -q s17- "$STATE_DIR/$f" && fail "$1: the ledger still names a VM of the scenario" ;;
      *) fail "$1: the state directory holds $f after recover" ;;
    esac
  done
  return 0
}

# Uninterrupted, once each: how long prepare (+ started) and release take, and that they work.
t0=$(cs); kt prepare begin - || fail "prepare exited $?: $(head -1 /tmp/kt.err)"; t1=$(cs)
kt started begin - || fail "started exited $?: $(head -1 /tmp/kt.err)"
expect_pool 1 $HP2M 128 "after prepare"
t2=$(cs); kt release end destroyed || fail "release exited $?"; t3=$(cs)
expect_base "after an uninterrupted release"
prep_ms=$(( (t1 - t0) * 10 )); rel_ms=$(( (t3 - t2) * 10 ))
note "uninterrupted: prepare ${prep_ms} ms, release ${rel_ms} ms"

# The same for the VM without isolation.
vm=s17-light
t0=$(cs); kt prepare begin - || fail "light prepare exited $?: $(head -1 /tmp/kt.err)"; t1=$(cs)
kt started begin - || fail "light started exited $?: $(head -1 /tmp/kt.err)"
t2=$(cs); kt release end destroyed || fail "light release exited $?"; t3=$(cs)
expect_base "after an uninterrupted release of the light VM"
light_prep_ms=$(( (t1 - t0) * 10 )); light_rel_ms=$(( (t3 - t2) * 10 ))
note "uninterrupted without isolation: prepare ${light_prep_ms} ms, release ${light_rel_ms} ms"

start=$(cs); i=0; killed=0; journals=0; longest=0; full=0
while [ $i -lt 50 ] && [ $(( $(cs) - t_scenario + longest * 3 / 2 )) -lt 5300 ]; do
  i=$((i + 1)); it0=$(cs)
  if [ $(( (i - 1) / 2 % 3 )) = 0 ]; then vm=s17-full; p_ms=$prep_ms; r_ms=$rel_ms; full=$((full + 1))
  else vm=s17-light; p_ms=$light_prep_ms; r_ms=$light_rel_ms; fi
  if [ $((i % 2)) = 1 ]; then op=prepare; max=$p_ms
  else
    op=release; max=$r_ms
    kt prepare begin - || fail "iteration $i: setting up for release: prepare exited $?: $(head -1 /tmp/kt.err)"
    kt started begin - || fail "iteration $i: started exited $?: $(head -1 /tmp/kt.err)"
  fi
  # The first quarter of an operation reads the host and plans (no journal yet): kills land
  # in the rest of it, where journals are written, or just after it.
  delay=$(( max / 4 + $(rand $((max + 20))) ))
  case $op in
    prepare) taskset -c 0 "$KT" hook $vm prepare begin - < /tmp/${vm#s17-}.xml > /dev/null 2>&1 & ;;
    release) taskset -c 0 "$KT" hook $vm release end destroyed < /tmp/${vm#s17-}.xml > /dev/null 2>&1 & ;;
  esac
  pid=$!
  usleep $((delay * 1000))
  kill -9 $pid 2>/dev/null
  wait $pid; rc=$?
  [ $rc = 137 ] && killed=$((killed + 1))
  ls "$STATE_DIR" 2>/dev/null | grep -q '^journal-' && journals=$((journals + 1))
  "$KT" recover > /tmp/recover.out 2>&1 || fail "iteration $i ($op, killed after ${delay} ms): recover exited $?: $(head -1 /tmp/recover.out)"
  expect_base "iteration $i ($vm $op, kill -9 after ${delay} ms, exit $rc)"
  # recover is idempotent: a second one has nothing to do.
  "$KT" recover > /tmp/recover2.out 2>&1 || fail "iteration $i: second recover exited $?"
  grep -qx "nothing to release" /tmp/recover2.out || fail "iteration $i: second recover did something: $(head -1 /tmp/recover2.out)"
  [ $(( $(cs) - it0 )) -gt $longest ] && longest=$(( $(cs) - it0 ))
done
note "$i iterations ($full of the isolated VM) in $(( ($(cs) - start) / 100 )) s: kvmtune killed mid-run $killed times, $journals times with a journal to finish or undo"
vm=s17-full
iso_expect_same /tmp/base "after the last iteration" > /dev/null
[ $i -ge 2 ] || fail "only $i iteration(s) fit in the time: the machine is too slow for this scenario"
[ $killed -ge 1 ] || fail "none of $i kills landed while kvmtune ran (delays too long?)"
# How many kills left a journal depends on timing (a loaded machine stretches the reading
# phase): reported, not required; every iteration's host check is what must hold.
[ $journals -ge 1 ] || note "no kill of $i left a journal behind this time"
check_state_clean
