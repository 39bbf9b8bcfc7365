# timeout: 900
# Section 3b of BENCHMARKS.md, inside the Debian 13 hypervisor guest (systemd 257 on cgroup v2,
# kernel 6.12, libvirt 11.3): what a vCPU pinned to CPU 3 gets of its CPU with no isolation,
# with confinement (isolation = "systemd": every host unit's AllowedCPUs narrowed) and with an
# isolated partition (isolation = "auto", which takes partitions on this kernel), side by side
# in one boot, alternating, ROUNDS times each.
#
# The vCPU is a real one: a libvirt VM whose firmware boots a 512-byte disk that only jumps to
# itself (`jmp $`), so QEMU's vCPU thread ("CPU 0/TCG") is busy all the time. Host load: eight
# busy shell loops (two per CPU) in one system.slice service, not pinned, started before the VM
# (confinement and partition must take CPU 3 from running work, not just keep new work off it).
#
# Measured over SECONDS per round, from the guest kernel's own accounting:
#   share       the vCPU thread's time on CPU / wall time (/proc/PID/task/TID/schedstat)
#   waited ms/s the time it was runnable but something else ran (schedstat's run delay)
#   invol/s     its involuntary context switches per second (/proc/PID/task/TID/status)
#   irq/s       interrupts CPU 3 took per second (its column of /proc/interrupts), split into
#               the local timer (LOC), device IRQs (numbered lines) and the rest (IPIs: RES,
#               CAL, TLB, IWI, ...)
#   softirq/s   softirqs CPU 3 ran per second (its column of /proc/softirqs): the kernel's
#               deferred work there (timers, RCU, the scheduler's balancing, network, block)
# One "@@BENCH {json}" line per round; bench/hypervisor.sh collects them.
. /hv/guest/lib.sh
SECONDS_PER_ROUND=${HV_BENCH_SECONDS:-15}
ROUNDS=${HV_BENCH_ROUNDS:-2}
CPU=3
policy=/etc/kvmtune/kvmtune.toml
cp "$policy" /tmp/policy.orig
restore_policy() { cp /tmp/policy.orig "$policy"; }
save_state /tmp/base

# The boot disk (1 MiB: the firmware wants a disk with a geometry): `jmp $` (EB FE) at 0x7c00
# and the boot signature.
img=/var/lib/libvirt/images/hv-spin.img
head -c 1048576 /dev/zero > "$img"
printf '\xeb\xfe' | dd of="$img" conv=notrunc status=none
printf '\x55\xaa' | dd of="$img" bs=1 seek=510 conv=notrunc status=none
spin_xml() { # NAME ID TUNE
  domain_xml "$1" "$2" vcpupin=$CPU emulatorpin=0 ${3:+"tune=$3"} |
    sed -e "s|<type arch='x86_64' machine='q35'>hvm</type>|&<boot dev='hd'/>|" \
        -e "s|<serial type='pty'/>|<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$img'/><target dev='sda' bus='sata'/></disk>&|" \
        > "/tmp/$1.xml"
  virsh_ define "/tmp/$1.xml" >/dev/null || fail "virsh define $1 failed"
  DEFINED+=("$1")
}
spin_xml hv-bench-plain 50 ''
spin_xml hv-bench-iso 51 '<kvmtune:isolate cpus="vcpus"/>'

load_pids() { systemctl show -p MainPID --value hv-bench-load.service; }
cleanup() {
  systemctl stop hv-bench-load.service 2>/dev/null
  restore_policy
  cleanup_domains
  rm -f "$img"
}
trap cleanup EXIT
# Eight busy loops, the workload (ended with their unit), in system.slice.
systemd-run --quiet --unit=hv-bench-load sh -c 'for i in 1 2 3 4 5 6 7 8; do (while :; do :; done) & done; wait' \
  || fail "systemd-run of the host load failed"
wait_for 10 "the host load did not start" unit_has_pid hv-bench-load.service
busy_loops() { [ "$(pgrep -c -P "$(load_pids)")" = 8 ]; }
wait_for 10 "the host load's eight loops did not start" busy_loops

vcpu_tid() { # the "CPU 0/TCG" thread of the VM's QEMU
  local pid t
  pid=$(qemu_pid "$1") || return 1
  for t in /proc/$pid/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = "CPU 0/TCG" ] && { echo "${t##*/}"; return 0; }
  done
  return 1
}
thread_ticks() { sed 's/.*) //' "/proc/$1/task/$2/stat" | awk '{print $12 + $13}'; }
thread_invol() { awk '/^nonvoluntary_ctxt_switches:/{print $2}' "/proc/$1/task/$2/status"; }
# RUN_NS WAIT_NS: time on CPU and time runnable but waiting, from schedstat.
thread_sched() { awk '{print $1, $2}' "/proc/$1/task/$2/schedstat"; }
cpu_softirqs() { awk -v col=$((CPU + 2)) 'NR > 1 {n += $col} END {print n + 0}' /proc/softirqs; }
# LOC DEVICE OTHER: CPU's interrupt counts by kind.
cpu_irqs() {
  awk -v col=$((CPU + 2)) 'NR > 1 && NF >= col {
      n = $col + 0
      if ($1 == "LOC:") loc += n; else if ($1 ~ /^[0-9]+:$/) dev += n; else other += n
    } END { print loc + 0, dev + 0, other + 0 }' /proc/interrupts
}
now_ms() { date +%s%3N; }
hz=$(getconf CLK_TCK)

# measure MODE VM ROUND: one round's numbers as an @@BENCH line.
measure() {
  local mode=$1 vm=$2 round=$3 pid tid t0 t1 r0 w0 r1 w1 iv0 iv1 s0 s1 l0 d0 o0 l1 d1 o1
  start "$vm"
  pid=$(qemu_pid "$vm")
  wait_for 30 "no vCPU thread in $vm's QEMU" vcpu_tid "$vm"
  tid=$(vcpu_tid "$vm")
  # The vCPU runs its loop once it has used CPU time: the firmware is past, the jmp spins.
  spinning() { [ "$(thread_ticks "$pid" "$tid")" -gt "$hz" ]; }
  wait_for 60 "$vm's vCPU thread does not run" spinning
  # The vCPU must be in the loop at 0x7c00, not in the firmware's.
  at_loop() { virsh_ qemu-monitor-command "$vm" --hmp 'info registers' | grep -q 'EIP=00007c00'; }
  wait_for 60 "$vm's vCPU is not in the boot sector's loop: $(virsh_ qemu-monitor-command "$vm" --hmp 'info registers' | grep -o 'EIP=[0-9a-f]*')" at_loop
  t0=$(now_ms); read -r r0 w0 <<<"$(thread_sched "$pid" "$tid")"; iv0=$(thread_invol "$pid" "$tid")
  s0=$(cpu_softirqs); read -r l0 d0 o0 <<<"$(cpu_irqs)"
  # The measurement window (a fixed length is what is measured, not a wait for a condition).
  sleep "$SECONDS_PER_ROUND"
  t1=$(now_ms); read -r r1 w1 <<<"$(thread_sched "$pid" "$tid")"; iv1=$(thread_invol "$pid" "$tid")
  s1=$(cpu_softirqs); read -r l1 d1 o1 <<<"$(cpu_irqs)"
  awk -v mode="$mode" -v round="$round" -v ms=$((t1 - t0)) \
      -v run=$((r1 - r0)) -v wait=$((w1 - w0)) -v iv=$((iv1 - iv0)) -v soft=$((s1 - s0)) \
      -v loc=$((l1 - l0)) -v dev=$((d1 - d0)) -v oth=$((o1 - o0)) 'BEGIN {
    s = ms / 1000
    printf "@@BENCH {\"mode\": \"%s\", \"round\": %d, \"seconds\": %.2f, \"share\": %.3f, \"waited_ms_per_s\": %.1f, \"invol_per_s\": %.1f, \"irq_per_s\": %.1f, \"loc_per_s\": %.1f, \"device_irq_per_s\": %.1f, \"other_irq_per_s\": %.1f, \"softirq_per_s\": %.1f}\n",
      mode, round, s, run / 1e9 / s, wait / 1e6 / s, iv / s, (loc + dev + oth) / s, loc / s, dev / s, oth / s, soft / s
  }'
  stop "$vm"
}

for round in $(seq 1 "$ROUNDS"); do
  restore_policy
  measure none hv-bench-plain "$round"
  sed -i 's/^isolation = "auto"/isolation = "systemd"/' "$policy"
  grep -q '^isolation = "systemd"' "$policy" || fail "harness: no isolation key in $policy"
  measure confinement hv-bench-iso "$round"
  restore_policy
  measure partition hv-bench-iso "$round"
done
systemctl stop hv-bench-load.service
restore_policy
expect_state /tmp/base "after the benchmark"
