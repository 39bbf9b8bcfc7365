# topologies: 2node
# The device's driver is not loaded when the VM starts (as a VFIO device has no MSI-X vectors
# until the guest enables them): at `started` only what exists is placed. `kvmtune watch`
# runs in the background; loading the driver makes the MSI-X vectors appear, and the watcher pins
# them to the VM's vCPU (CPU 3) within 2 s (watch_interval 500ms). The driver also starts a
# kernel thread (hwrng) on every CPU after the VM's were isolated: the watcher confines it, and
# `status` says every promise is kept. Its CPU time over 10 s of
# idling is printed. At release (the watcher still running) every IRQ that existed before is
# exactly as before, each new vector is back to the affinity the kernel gave it (the
# default_smp_affinity of the time), and the watcher leaves them so.
. /tests/lib.sh
. /tests/isolation.sh
. /tests/irq.sh
WATCH=""
cleanup() {
  [ -n "$WATCH" ] && kill $WATCH 2>/dev/null && wait $WATCH 2>/dev/null
  iso_cleanup; irq_cleanup; driver_unload >/dev/null 2>&1; return 0
}
trap cleanup EXIT
uptime_cs() { awk '{ split($1, a, "."); print a[1] * 100 + a[2] }' /proc/uptime; }
cputicks() { awk '{ sub(/^.*\) /, ""); split($0, f, " "); print f[12] + f[13] }' /proc/$1/stat; }

taskset -p -c 0-3 $$ >/dev/null
driver_unload
devirqs=$(dev_irqs)
note "device $DEV_BDF without driver: IRQs [$devirqs] (INTx $(cat $DEV/irq)), no MSI-X vectors"

iso_policy 0-1
irqdom /tmp/vm.xml s15-watch vcpus vcpus 3
iso_snapshot /tmp/base
irq_snapshot /tmp/base.irq
echo "before:"; sed 's/^/  /' /tmp/base.irq

vm_prepare s15-watch /tmp/vm.xml
vm_run s15-watch /tmp/vm.xml
irq_expect_placed /tmp/base.irq s15-watch "$devirqs" 3 3 0-1 "after started (no vectors yet)"
deflist=$(list_of_mask "$(cat /proc/irq/default_smp_affinity)")

"$KT" watch > /tmp/watch.out 2>&1 &
WATCH=$!
note "the watcher: pid $WATCH"
# It is at work once it has made its first pass and waits for the next (in rt_sigtimedwait,
# where a SIGTERM would end it: syscall 128 on x86_64; 230 and 35 are clock_nanosleep and
# nanosleep, for a watcher that sleeps). The driver is loaded only then, so that the 2 s
# below measure the watcher, not its start under TCG.
watch_sleeps() {
  kill -0 "$WATCH" 2>/dev/null || fail "kvmtune watch exited at start: $(head -3 /tmp/watch.out | tr '\n' ';')"
  read -r nr _ 2>/dev/null < "/proc/$WATCH/syscall" && case $nr in 128|230|35) true ;; *) false ;; esac
}
wait_until 10 watch_sleeps ||
  fail "kvmtune watch did not finish its first pass within 10 s (/proc/$WATCH/syscall: $(cat "/proc/$WATCH/syscall" 2>&1))"

# The driver enables MSI-X: new vectors, which the watcher must pin to CPU 3.
driver_load
vectors=$(dev_msi_irqs)
t0=$(uptime_cs)
while :; do
  pending=""
  for n in $vectors; do [ "$(cat /proc/irq/$n/smp_affinity_list 2>/dev/null)" = 3 ] || pending="$pending $n"; done
  [ -z "$pending" ] && break
  if [ $(( $(uptime_cs) - t0 )) -gt 200 ]; then
    for n in $vectors; do echo "  IRQ $n: smp_affinity_list $(cat /proc/irq/$n/smp_affinity_list)"; done
    echo "  watcher output:"; sed 's/^/    /' /tmp/watch.out
    fail "the watcher did not pin the new vectors [$pending ] to CPU 3 within 2 s of the driver loading"
  fi
  sleep 0.1
done
note "the watcher pinned the new vectors [$vectors] to CPU 3 within $(( ($(uptime_cs) - t0) * 10 )) ms"
kill -0 $WATCH 2>/dev/null || fail "kvmtune watch exited: $(head -3 /tmp/watch.out | tr '\n' ';')"
# The driver's kernel thread (hwrng) was born on every CPU: the watcher confines it within a
# few of its passes, and the verdict of `status` is then that every promise is kept.
verdict_kept() { "$KT" status > /tmp/verdict.out 2>&1; }
wait_until 5 verdict_kept ||
  fail "after the driver loaded: kvmtune status still says within 5 s: $(grep -m1 Verdict /tmp/verdict.out)"
note "after the driver loaded: $(grep -m1 Verdict /tmp/verdict.out)"
devirqs=$(dev_irqs)
irq_expect_placed /tmp/base.irq s15-watch "$devirqs" 3 3 0-1 "after the driver loaded"
dev_expect_fired "$vectors" 3 "after the driver loaded"

# The watcher idling: its CPU time (utime + stime, in clock ticks) over 10 s (a measurement
# window, not a wait).
c0=$(cputicks $WATCH); t0=$(uptime_cs)
sleep 10
c1=$(cputicks $WATCH); t1=$(uptime_cs)
note "the watcher used $((c1 - c0)) ticks in 10 s ($((c1 - c0)) x 1/$(getconf CLK_TCK 2>/dev/null || echo 100) s over $(( (t1 - t0) * 10 )) ms, watch_interval 500ms, under TCG)"
kill -0 $WATCH 2>/dev/null || fail "kvmtune watch exited while idle: $(head -3 /tmp/watch.out | tr '\n' ';')"
[ ! -s /tmp/watch.out ] && note "the watcher wrote nothing on stdout/stderr" || { echo "watcher output:"; sed 's/^/  /' /tmp/watch.out; }

# Release with the watcher still running: what existed goes back exactly; the new vectors go back
# to what the kernel gave them when they were made (default_smp_affinity then, $deflist).
vm_stop s15-watch /tmp/vm.xml destroyed
for n in $vectors; do
  grep -q "^$n " /tmp/base.irq && fail "harness: vector $n existed before the driver loaded"
done
expect_restored() {
  irq_snapshot /tmp/irq.after
  awk -v vec=" $vectors " '!($1 ~ /^[0-9]+$/ && index(vec, " " $1 " "))' /tmp/irq.after > /tmp/irq.after.old
  if ! cmp -s /tmp/base.irq /tmp/irq.after.old; then
    diff /tmp/base.irq /tmp/irq.after.old | sed 's/^/  /'
    fail "$1: IRQ affinities not as before: $(diff /tmp/base.irq /tmp/irq.after.old | grep '^[-+][^-+]' | tr '\n' ';')"
  fi
  for n in $vectors; do
    got=$(cat /proc/irq/$n/smp_affinity_list)
    [ "$got" = "$deflist" ] || fail "$1: new vector $n has smp_affinity_list $got, expected $deflist (what the kernel gave it; kvmtune pinned it to 3)"
  done
  note "$1: every IRQ as before, new vectors [$vectors] back on $deflist"
}
expect_restored "after release"
# A window, not a wait: 4 of the watcher's passes (watch_interval 500ms), in which it must not
# pin the vectors again.
sleep 2
expect_restored "2 s after release (the watcher running)"
kill -0 $WATCH 2>/dev/null || fail "kvmtune watch exited after release: $(head -3 /tmp/watch.out | tr '\n' ';')"
kill $WATCH; wait $WATCH 2>/dev/null; WATCH=""
iso_expect_same /tmp/base "after release"
check_state_clean
