# shellcheck shell=bash
# Helpers for the hypervisor scenarios (bash, inside the Debian 13 guest). Source with
#   . /hv/guest/lib.sh
# A scenario fails through `fail REASON` (the first reason is the one reported) or a non-zero
# exit; `note` lines go to its log, shown when it fails.
set -u
URI=qemu:///system
NODE_SYS=/sys/devices/system/node
CG=/sys/fs/cgroup
# shellcheck disable=SC2034 # used by the scenarios
DEB=$(ls /hv/kvmtune_*.deb 2>/dev/null | head -1)

fail() {
  echo "FAIL: $*"
  [ -s /run/hvtest-reason ] || echo "$*" > /run/hvtest-reason
  exit 1
}
note() { echo "# $*"; }
virsh_() { virsh -q -c "$URI" "$@"; }

# wait_for SECONDS WHAT COMMAND...: poll COMMAND every 50 ms until it succeeds; fail after
# SECONDS with WHAT. Never a fixed sleep: every wait in the tier goes through here. COMMAND is
# run again each time: pass a predicate (below), not `test "$(…)"`, which the shell expands once.
wait_for() {
  local bound=$1 what=$2 deadline
  shift 2
  deadline=$(( $(date +%s%N) + bound * 1000000000 ))
  until "$@"; do
    [ "$(date +%s%N)" -lt "$deadline" ] || fail "$what (waited ${bound} s)"
    sleep 0.05
  done
}
# The same, measured: prints how long the condition took to hold, in ms.
wait_ms() {
  local bound=$1 what=$2 t0
  shift 2
  t0=$(date +%s%N)
  wait_for "$bound" "$what" "$@"
  echo $(( ($(date +%s%N) - t0) / 1000000 ))
}

hp() { cat "$NODE_SYS/node$1/hugepages/hugepages-$2kB/$3"; }

# Predicates for wait_for.
pool_is() { [ "$(hp "$1" "$2" nr_hugepages)" = "$3" ]; }             # NODE SIZE_KB COUNT
driver_is() { [ "$(basename "$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null)")" = "$2" ]; }  # BDF DRIVER
unit_has_pid() { [ "$(systemctl show -p MainPID --value "$1")" != 0 ]; }  # UNIT
irqbalance_banned_is() { [ "$(irqbalance_banned)" = "$1" ]; }      # MASK as irqbalance prints it

# Does the CPU list $1 (kernel syntax) contain CPU $2?
in_list() {
  local item lo hi
  for item in ${1//,/ }; do
    lo=${item%-*} hi=${item#*-}
    [ "$2" -ge "$lo" ] && [ "$2" -le "$hi" ] && return 0
  done
  return 1
}

# domain_xml NAME UUID-SUFFIX OPTIONS...: a tiny TCG domain (no disk, no OS: it runs in its
# firmware) on stdout. Options: vcpupin=CPU (one vCPU pinned there), emulatorpin=LIST,
# huge=MiB (hugepage-backed, 2 MiB pages), node=N (strict numatune), tune='<...>' (kvmtune
# metadata elements), hostdev=BDF (a PCI device, managed='no'), autostart is virsh's.
domain_xml() {
  local name=$1 id=$2 vcpupin='' emulatorpin='' huge='' node='' tune='' hostdev='' mib=64 opt
  shift 2
  for opt in "$@"; do
    case $opt in
      vcpupin=*) vcpupin=${opt#*=} ;;
      emulatorpin=*) emulatorpin=${opt#*=} ;;
      huge=*) huge=${opt#*=}; mib=$huge ;;
      node=*) node=${opt#*=} ;;
      tune=*) tune=${opt#*=} ;;
      hostdev=*) hostdev=${opt#*=} ;;
      *) fail "harness: domain_xml: unknown option $opt" ;;
    esac
  done
  echo "<domain type='qemu'>"
  echo "  <name>$name</name><uuid>6b0c7a52-0000-4000-8000-$(printf '%012d' "$id")</uuid>"
  echo "  <memory unit='MiB'>$mib</memory>"
  [ -n "$huge" ] && echo "  <memoryBacking><hugepages/></memoryBacking>"
  [ -n "$tune" ] && echo "  <metadata><kvmtune:tune xmlns:kvmtune='urn:kvmtune:1'>$tune</kvmtune:tune></metadata>"
  echo "  <vcpu placement='static'>1</vcpu>"
  if [ -n "$vcpupin$emulatorpin" ]; then
    echo "  <cputune>"
    [ -n "$vcpupin" ] && echo "    <vcpupin vcpu='0' cpuset='$vcpupin'/>"
    [ -n "$emulatorpin" ] && echo "    <emulatorpin cpuset='$emulatorpin'/>"
    echo "  </cputune>"
  fi
  [ -n "$node" ] && echo "  <numatune><memory mode='strict' nodeset='$node'/></numatune>"
  echo "  <os><type arch='x86_64' machine='q35'>hvm</type></os>"
  echo "  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>"
  echo "  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
  echo "    <serial type='pty'/><memballoon model='none'/>"
  if [ -n "$hostdev" ]; then
    local b=${hostdev#*:}
    echo "    <hostdev mode='subsystem' type='pci' managed='no'><source>"
    echo "      <address domain='0x0000' bus='0x${b%%:*}' slot='0x$(cut -d: -f2 <<<"$b" | cut -d. -f1)' function='0x${hostdev##*.}'/>"
    echo "    </source></hostdev>"
  fi
  echo "  </devices>"
  echo "</domain>"
}

DEFINED=()
# define NAME ID OPTIONS...: define the domain (undefined again by cleanup_domains).
define() {
  local name=$1
  domain_xml "$@" > "/tmp/$name.xml"
  virsh_ define "/tmp/$name.xml" >/dev/null || fail "virsh define $name failed"
  DEFINED+=("$name")
}
start() { virsh_ start "$1" >/tmp/start.out 2>&1 || fail "virsh start $1 failed: $(tr '\n' ' ' </tmp/start.out)"; }
stop() { virsh_ destroy "$1" >/dev/null 2>&1 || true; }
cleanup_domains() {
  local d
  for d in "${DEFINED[@]}"; do
    virsh_ destroy "$d" >/dev/null 2>&1 || true
    virsh_ undefine "$d" >/dev/null 2>&1 || true
  done
}
trap cleanup_domains EXIT

qemu_pid() { cat "/run/libvirt/qemu/$1.pid" 2>/dev/null; }

# ---- the host's state, for before/after comparisons ------------------------------------------

# Every hugepage pool, the IRQ default, the workqueue masks, and every IRQ's affinity unless
# irqbalance runs (it moves IRQs on its own: the IRQ scenarios check those they pin).
host_snapshot() {
  local f irqs=()
  systemctl is-active --quiet irqbalance.service || irqs=(/proc/irq/*/smp_affinity_list)
  for f in "$NODE_SYS"/node*/hugepages/hugepages-*/nr_hugepages /proc/sys/vm/nr_hugepages \
           /proc/irq/default_smp_affinity "${irqs[@]}" \
           /sys/devices/virtual/workqueue/cpumask /sys/bus/workqueue/devices/writeback/cpumask; do
    [ -e "$f" ] && echo "$f $(cat "$f" 2>/dev/null)"
  done
}

# Every cgroup's cpuset and controller files outside machine.slice (libvirt's VMs come and go).
cgroup_snapshot() {
  find "$CG" -path "$CG/machine.slice" -prune -o \
    \( -name cpuset.cpus -o -name cpuset.cpus.partition -o -name cpuset.cpus.exclusive \
       -o -name cgroup.subtree_control -o -name cpuset.mems \) -print 2>/dev/null | sort |
    while read -r f; do echo "$f $(tr '\n' ' ' < "$f" 2>/dev/null)"; done
}

# Every file under /run/systemd that configures units (drop-ins, transient units, generators'
# output), with a checksum; session and journal state that lives there on its own is left out,
# and so are the transient scopes of running VMs (machined's, gone with the VM).
run_systemd_snapshot() {
  find /run/systemd -type f \
    \( -path '/run/systemd/system.control/*' -o -path '/run/systemd/system/*' \
       -o -path '/run/systemd/transient/*' -o -path '/run/systemd/generator*' \) \
    -not -path '/run/systemd/transient/machine-*' 2>/dev/null |
    sort | xargs -r md5sum 2>/dev/null
}

# The properties of the units kvmtune may touch, as systemd reports them (what an operator sees
# with `systemctl show`), without counters and timestamps.
UNITS_SHOWN="-.slice system.slice user.slice init.scope machine.slice libvirtd.service virtqemud.service irqbalance.service"
units_snapshot() {
  local u
  for u in $UNITS_SHOWN; do
    systemctl show "$u" 2>/dev/null |
      grep -E '^(AllowedCPUs|AllowedMemoryNodes|EffectiveCPUs|EffectiveMemoryNodes|StartupAllowedCPUs|DropInPaths|NeedDaemonReload|CPUAffinity|Delegate|ActiveState|SubState)=' |
      grep -v '^SubState=\|^ActiveState=' | sed "s|^|$u |"
  done
}

# save_state FILE: everything above; expect_state FILE WHAT: fail naming what differs.
save_state() {
  { host_snapshot; cgroup_snapshot; run_systemd_snapshot; units_snapshot; } > "$1"
}
# A service's cgroup comes and goes with the service (Debian's libvirtd exits after 120 s
# without VMs or clients, and socket activation starts it again): the files of cgroups that
# exist in only one of the two states are not compared.
expect_state() {
  save_state /tmp/state.now
  cgroup_dirs() { awk -v cg="$CG/" 'index($1, cg) == 1 { sub("/[^/]*$", "", $1); print $1 }' "$1" | sort -u; }
  # Only services' cgroups: kvmtune never makes one, so a cgroup of its own left behind shows.
  comm -3 <(cgroup_dirs "$1") <(cgroup_dirs /tmp/state.now) | tr -d '\t' | grep '\.service$' > /tmp/state.gone
  if [ -s /tmp/state.gone ]; then
    note "cgroups in only one state (not compared): $(tr '\n' ' ' < /tmp/state.gone)"
    awk 'NR == FNR { gone[$1] = 1; next } { d = $1; sub("/[^/]*$", "", d) } !(d in gone)' /tmp/state.gone "$1" > /tmp/state.base
    awk 'NR == FNR { gone[$1] = 1; next } { d = $1; sub("/[^/]*$", "", d) } !(d in gone)' /tmp/state.gone /tmp/state.now > /tmp/state.now.kept
    mv /tmp/state.now.kept /tmp/state.now
  else
    cp "$1" /tmp/state.base
  fi
  if ! cmp -s /tmp/state.base /tmp/state.now; then
    diff /tmp/state.base /tmp/state.now | sed 's/^/  /'
    fail "$2: the host is not as before: $(diff /tmp/state.base /tmp/state.now | grep '^[<>]' | head -4 | tr '\n' ';')"
  fi
  note "$2: host as before"
}

# tasks_on_cpu CPU: host tasks that may run on CPU (their Cpus_allowed_list holds it), one
# "PID COMM CGROUP CPUS" line each, except kernel threads no one may move (PF_NO_SETAFFINITY:
# per-CPU workers, workqueue rescuers) and the VMs' own QEMU processes (in machine.slice).
PF_NO_SETAFFINITY=$((0x04000000))
tasks_on_cpu() {
  local cpu=$1 p pid cpus cg comm flags
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    cpus=$(awk '/^Cpus_allowed_list:/{print $2}' "$p/status" 2>/dev/null) || continue
    [ -n "$cpus" ] || continue
    in_list "$cpus" "$cpu" || continue
    cg=$(sed -n 's/^0:://p' "$p/cgroup" 2>/dev/null)
    comm=$(cat "$p/comm" 2>/dev/null)
    case $cg in /machine.slice/*) continue ;; esac
    # Field 9 of stat, after the parenthesised name (which may hold spaces).
    flags=$(sed 's/.*) //' "$p/stat" 2>/dev/null | awk '{print $7}')
    [ -n "$flags" ] && [ $(( flags & PF_NO_SETAFFINITY )) != 0 ] && continue
    echo "$pid $comm $cg $cpus"
  done
}

# The socket of the running irqbalance (/run/irqbalance/irqbalance<PID>.sock, PID alive and
# irqbalance: one that exited may leave its socket behind), or nothing.
irqbalance_sock() {
  local sock pid
  for sock in /run/irqbalance/irqbalance*.sock; do
    pid=${sock##*/irqbalance}; pid=${pid%.sock}
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = irqbalance ] && { echo "$sock"; return; }
  done
}
irqbalance_pid() { local sock; sock=$(irqbalance_sock); sock=${sock##*/irqbalance}; echo "${sock%.sock}"; }

# irqbalance's own banned CPUs (its `setup` answer's BANNED field, a hex mask), or "none"
# when it does not run.
irqbalance_banned() {
  local sock
  sock=$(irqbalance_sock)
  [ -n "$sock" ] || { echo none; return; }
  /hv/bin/irqbalance-ask "$sock" setup | sed -n 's/.*BANNED \([0-9a-fA-F,]*\).*/\1/p'
}

# The CPUs irqbalance bans on its own (without IRQBALANCE_BANNED_CPU* in its environment, as
# Debian ships it): the kernel's isolated and nohz_full CPUs, as a mask the way `setup` prints it
# (the guest has fewer than 32 CPUs: one 8-digit word).
irqbalance_own_banned() {
  local list item lo hi cpu mask=0
  list="$(cat /sys/devices/system/cpu/isolated /sys/devices/system/cpu/nohz_full 2>/dev/null | tr -c '0-9,\n-' ' ')"
  for item in ${list//,/ }; do
    lo=${item%-*} hi=${item#*-}
    for (( cpu = lo; cpu <= hi; cpu++ )); do
      [ "$cpu" -lt 32 ] || fail "harness: irqbalance_own_banned handles CPUs below 32, not $cpu"
      mask=$(( mask | (1 << cpu) ))
    done
  done
  printf '%08x\n' "$mask"
}

# The IRQ numbers of a PCI device as /proc/interrupts names them (vfio-intx(BDF), vfio-msix[N](BDF)).
vfio_irqs() { awk -v bdf="$1" 'index($0, "(" bdf ")") { sub(":", "", $1); print $1 }' /proc/interrupts; }

# Give the e1000e at BDF to vfio-pci (kept as found: restore_driver puts it back).
ORIG_DRIVER=""
bind_vfio() {
  local bdf=$1 dev=/sys/bus/pci/devices/$1
  [ -d "$dev" ] || fail "harness: no PCI device $bdf"
  ORIG_DRIVER=$(basename "$(readlink "$dev/driver" 2>/dev/null)" 2>/dev/null || true)
  modprobe vfio-pci || fail "modprobe vfio-pci failed"
  echo vfio-pci > "$dev/driver_override"
  [ -n "$ORIG_DRIVER" ] && echo "$bdf" > "$dev/driver/unbind"
  echo "$bdf" > /sys/bus/pci/drivers_probe
  wait_for 10 "$bdf is not bound to vfio-pci" driver_is "$bdf" vfio-pci
  note "$bdf: $ORIG_DRIVER -> vfio-pci, IOMMU group $(basename "$(readlink "$dev/iommu_group")")"
}
restore_driver() {
  local bdf=$1 dev=/sys/bus/pci/devices/$1
  echo > "$dev/driver_override"
  [ -e "$dev/driver" ] && echo "$bdf" > "$dev/driver/unbind"
  echo "$bdf" > /sys/bus/pci/drivers_probe
  [ -z "$ORIG_DRIVER" ] || wait_for 10 "$bdf is not back on $ORIG_DRIVER" driver_is "$bdf" "$ORIG_DRIVER"
}
