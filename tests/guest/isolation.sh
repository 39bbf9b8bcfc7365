# Helpers for the CPU isolation scenarios (busybox sh). Source after lib.sh:
#   . /tests/lib.sh; . /tests/isolation.sh
# Task classes, from the flags (field 9) of /proc/PID/stat:
#   U  a process (no PF_KTHREAD)
#   K  a kernel thread that may move (PF_KTHREAD 0x00200000, not PF_NO_SETAFFINITY)
#   P  a kernel thread the kernel binds (PF_NO_SETAFFINITY 0x04000000): per-CPU, workers
CG=/sys/fs/cgroup
HK_CG=$CG/kvmtune.housekeeping
WQ_MASKS="/sys/devices/virtual/workqueue/cpumask /sys/bus/workqueue/devices/writeback/cpumask"
ISO_PIDS=""          # processes the scenario started; ended by iso_cleanup
ISO_CGROUPS=""       # cgroups the scenario made (children first); removed by iso_cleanup
ISO_KPINS=""         # kernel threads the scenario pinned; given every CPU back by iso_cleanup

# tunedom FILE NAME TUNE DEVICES CPU...: a domain (no hugepages) with one vCPU per CPU (vCPU i
# pinned to the i-th CPU), the kvmtune metadata elements TUNE, and DEVICES in <devices>.
tunedom() {
  local file=$1 name=$2 tune=$3 devices=$4 i=0 pins="" c
  shift 4
  for c in "$@"; do pins="$pins<vcpupin vcpu='$i' cpuset='$c'/>"; i=$((i + 1)); done
  cat > "$file" <<EOF
<domain type='kvm' id='1'>
  <name>$name</name>
  <uuid>$(cat /proc/sys/kernel/random/uuid)</uuid>
  <metadata>
    <kvmtune:tune xmlns:kvmtune="urn:kvmtune:1">
      $tune
    </kvmtune:tune>
  </metadata>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>$i</vcpu>
  <cputune>
    $pins
  </cputune>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    $devices
  </devices>
</domain>
EOF
}

# isodom FILE NAME ISOLATE CPU...: tunedom with <kvmtune:isolate cpus="ISOLATE"/>.
isodom() {
  local file=$1 name=$2 iso=$3
  shift 3
  tunedom "$file" "$name" "<kvmtune:isolate cpus=\"$iso\"/>" "" "$@"
}

# iso_policy HOUSEKEEPING: a policy with [cpus] housekeeping, KVMTUNE_CONFIG pointing at it.
iso_policy() {
  mkdir -p /etc/kvmtune
  printf '[cpus]\nhousekeeping = "%s"\n' "$1" > /etc/kvmtune/kvmtune.toml
  export KVMTUNE_CONFIG=/etc/kvmtune/kvmtune.toml
  note "policy: [cpus] housekeeping = \"$1\""
}

# iso_tasks FILE: one line per task, `pid|class|comm|cgroup|Cpus_allowed_list`. One awk, no
# subshell: the only PIDs listed are the host's, not the snapshot's own helpers.
iso_tasks() {
  awk '
    function slurp(f,   l, s) { s = ""; while ((getline l < f) > 0) s = s l "\n"; close(f); return s }
    BEGIN {
      for (i = 1; i < ARGC; i++) {
        d = ARGV[i]; pid = d; sub(/.*\//, "", pid)
        stat = slurp(d "/stat"); status = slurp(d "/status"); cg = slurp(d "/cgroup")
        if (stat == "" || status == "") continue
        o = index(stat, "("); match(stat, /\)[^)]*$/)
        comm = substr(stat, o + 1, RSTART - o - 1)
        # A worker names its current workqueue (kworker/2:1-events): the name of the task is the part before.
        if (comm ~ /^kworker\//) sub(/-.*/, "", comm)
        split(substr(stat, RSTART + 2), f, " ")
        flags = f[7] + 0
        cls = "U"
        if (and(flags, 2097152)) cls = (and(flags, 67108864) ? "P" : "K")
        allowed = "?"
        if (match(status, /Cpus_allowed_list:[ \t]*[0-9,-]+/)) {
          allowed = substr(status, RSTART, RLENGTH); sub(/Cpus_allowed_list:[ \t]*/, "", allowed)
        }
        sub(/^0::/, "", cg); sub(/\n.*/, "", cg)
        printf "%s|%s|%s|%s|%s\n", pid, cls, comm, cg, allowed
      }
    }' /proc/[0-9]*
}

# iso_snapshot BASE: BASE.tasks (iso_tasks) and BASE.files: the workqueue masks, the root's
# cgroup.subtree_control and cpuset.cpus.isolated, every cgroup dir, and every cgroup's
# cpuset.cpus, cpuset.cpus.exclusive and cpuset.cpus.partition where they exist.
iso_snapshot() {
  local f d
  iso_tasks > "$1.tasks"
  {
    for f in $WQ_MASKS $CG/cgroup.subtree_control $CG/cpuset.cpus.isolated; do
      [ -e "$f" ] && echo "F $f=$(cat "$f")"
    done
    for d in $(find $CG -mindepth 1 -type d | sort); do
      echo "D $d"
      # (Partition files where the kernel has them: 6.7 and later.)
      for f in cpuset.cpus cpuset.cpus.exclusive cpuset.cpus.partition; do
        [ -e "$d/$f" ] && echo "F $d/$f=$(cat "$d/$f")"
      done
    done
  } > "$1.files"
}

# iso_expect_same BASE WHAT: the host as in BASE: files, masks and cgroups equal; every task of
# BASE that still runs has the same comm, cgroup and affinity; no new process (new kernel
# threads are the kernel's business).
iso_expect_same() {
  iso_snapshot /tmp/iso.now
  if ! cmp -s "$1.files" /tmp/iso.now.files; then
    diff "$1.files" /tmp/iso.now.files | sed 's/^/  /'
    fail "$2: not as before: $(diff "$1.files" /tmp/iso.now.files | grep '^[-+][^-+]' | tr '\n' ';')"
  fi
  # Kernel-bound threads (P) are the kernel's to move (a workqueue rescuer follows the pool it
  # rescues): kvmtune never touches them, so they are not compared.
  awk -F'|' 'NR == FNR { b[$1] = $0; next }
    ($1 in b) && b[$1] != $0 && $2 != "P" { print "was " b[$1] ", now " $0 }
    !($1 in b) && $2 == "U" { print "new process " $0 }' "$1.tasks" /tmp/iso.now.tasks > /tmp/iso.diff
  if [ -s /tmp/iso.diff ]; then
    echo "tasks differ from $1 (pid|class|comm|cgroup|cpus):"; sed 's/^/  /' /tmp/iso.diff
    fail "$2: $(wc -l < /tmp/iso.diff) tasks not as before: $(head -3 /tmp/iso.diff | tr '\n' ';')"
  fi
  note "$2: every task, cgroup, cpuset and workqueue mask as before"
}

# iso_expect_confined HK WHAT [PID...]: every process but PID... and every movable kernel thread
# is allowed only on HK, and no process but PID... is left in the root cgroup.
iso_expect_confined() {
  local hk=$1 what=$2
  shift 2
  iso_tasks > /tmp/iso.conf
  awk -F'|' -v hk="$hk" -v except=" $* " '
    '"$AWK_SETS"'
    BEGIN { H = expand(hk) }
    $2 == "P" || index(except, " " $1 " ") { next }
    !subset(expand($5), H) { print "pid " $1 " \"" $3 "\" (" ($2 == "K" ? "kernel thread" : "cgroup " $4) ") allowed on CPUs " $5; next }
    $2 == "U" && $4 == "/" { print "pid " $1 " \"" $3 "\" still in the root cgroup" }
  ' /tmp/iso.conf > /tmp/iso.unconfined
  if [ -s /tmp/iso.unconfined ]; then
    echo "not confined to CPUs $hk:"; sed 's/^/  /' /tmp/iso.unconfined
    fail "$what: $(wc -l < /tmp/iso.unconfined) tasks not confined to CPUs $hk: $(head -3 /tmp/iso.unconfined | tr '\n' ';')"
  fi
  note "$what: every process and movable kernel thread on CPUs $hk (except [${*:-none}])"
}

# awk functions on CPU lists: expand("0-2,5") = ",0,1,2,5,"; subset and meets of expanded sets.
AWK_SETS='
    function expand(l,   n, i, r, a, c, s) {
      s = ","; n = split(l, r, ",")
      for (i = 1; i <= n; i++) {
        if (split(r[i], a, "-") == 2) { for (c = a[1] + 0; c <= a[2] + 0; c++) s = s c "," }
        else s = s (r[i] + 0) ","
      }
      return s
    }
    function subset(x, y,   n, i, e) {
      n = split(x, e, ",")
      for (i = 1; i <= n; i++) if (e[i] != "" && index(y, "," e[i] ",") == 0) return 0
      return 1
    }
    function meets(x, y,   n, i, e) {
      n = split(x, e, ",")
      for (i = 1; i <= n; i++) if (e[i] != "" && index(y, "," e[i] ",") > 0) return 1
      return 0
    }
'
# count_on CLASS CPUS FILE: tasks of CLASS in FILE (iso_tasks) allowed on any of CPUS
count_on() {
  awk -F'|' -v cls="$1" -v cpus="$2" "$AWK_SETS"'
    BEGIN { C = expand(cpus) } $2 == cls && meets(expand($5), C) { n++ } END { print n + 0 }' "$3"
}
cpus_of() { awk '/^Cpus_allowed_list:/ {print $2}' /proc/$1/status; }
cgroup_of() { sed -n 's/^0:://p' /proc/$1/cgroup; }
# expect_eq ACTUAL EXPECTED WHAT
expect_eq() { [ "$1" = "$2" ] || fail "$3: '$1', expected '$2'"; }
mask_of() {   # mask_of CPULIST: the hex mask (CPUs < 32)
  local m=0 r a b
  for r in $(echo "$1" | tr , ' '); do
    a=${r%-*}; b=${r#*-}
    while [ "$a" -le "$b" ]; do m=$((m | (1 << a))); a=$((a + 1)); done
  done
  printf '%x' $m
}

# iso_expect_isolated HK ISO WHAT [PID...]: kvmtune's cgroup v2 isolation holds with host tasks
# on HK and ISO isolated: confinement (iso_expect_confined, PID... excepted), the housekeeping
# cgroup's effective CPUs, the workqueue masks, kthreadd, this shell and a new child of it,
# that no host task can be pinned to ISO, and `kvmtune status`.
iso_expect_isolated() {
  local hk=$1 iso=$2 what=$3 f m p
  shift 3
  iso_expect_confined "$hk" "$what" "$@"
  [ -d $HK_CG ] || fail "$what: $HK_CG does not exist"
  expect_eq "$(cat $HK_CG/cpuset.cpus.effective)" "$hk" "$what: $HK_CG/cpuset.cpus.effective"
  for f in $WQ_MASKS; do
    [ -e "$f" ] || continue
    m=$(cat "$f")
    [ $((0x$m)) = $((0x$(mask_of "$hk"))) ] || fail "$what: $f is $m, expected $(mask_of "$hk") (CPUs $hk)"
  done
  expect_eq "$(cpus_of 2)" "$hk" "$what: kthreadd's CPUs"
  expect_eq "$(cgroup_of $$)" "/kvmtune.housekeeping" "$what: the scenario shell's cgroup"
  expect_eq "$(cpus_of $$)" "$hk" "$what: the scenario shell's CPUs"
  sleep 30 & p=$!
  expect_eq "$(cgroup_of $p)" "/kvmtune.housekeeping" "$what: cgroup of a process started now"
  expect_eq "$(cpus_of $p)" "$hk" "$what: CPUs of a process started now"
  kill $p; wait $p 2>/dev/null
  if taskset -c "$iso" true 2>/tmp/taskset.err; then
    fail "$what: a host process could pin itself to isolated CPUs $iso (taskset -c $iso succeeded)"
  fi
  note "$what: taskset -c $iso refused: $(cat /tmp/taskset.err)"
  "$KT" status > /tmp/status.out 2>&1 || fail "$what: kvmtune status exited $?: $(head -1 /tmp/status.out)"
  grep -E '^CPUs:|^Isolation|^  (per-CPU|still allowed|every other)' /tmp/status.out | sed 's/^/  status: /'
  grep -qxF "Isolation (cgroup v2 cpuset): CPUs $iso isolated, host tasks on $hk" /tmp/status.out ||
    fail "$what: kvmtune status has no line 'Isolation (cgroup v2 cpuset): CPUs $iso isolated, host tasks on $hk': $(grep -i isolat /tmp/status.out | tr '\n' ';')"
  note "$what: confined to $hk, $iso isolated"
}

# iso_start NAME CMD...: start CMD in the background on CPUs 0-3, remember it.
iso_start() {
  local name=$1
  shift
  taskset -c 0-3 "$@" & ISO_PID=$!
  ISO_PIDS="$ISO_PIDS $ISO_PID"
  note "$name: pid $ISO_PID ($*)"
}

# vm_prepare of lib.sh, remembering the VM: iso_cleanup releases it if the scenario did not.
ISO_VMS=""
vm_prepare() { ISO_VMS="$ISO_VMS $1:$2"; hook_ok "$1" prepare begin - "$2"; }

# iso_cleanup: release (as libvirt does after a failed start) every VM the scenario prepared
# and did not release, end what it started, remove its cgroups; if kvmtune's housekeeping
# cgroup is still there, empty and remove it, so that later scenarios start clean.
# iso_pin_kthread CPUS: pin an unbound kernel thread (class K, on every CPU, not kthreadd nor
# one pinned before) to CPUS with taskset, as an operator pins RCU threads; sets KPIN to its PID.
iso_pin_kthread() {
  local all
  all=$(cat /sys/devices/system/cpu/online)
  KPIN=$(iso_tasks | awk -F'|' -v all="$all" -v taken=" $ISO_KPINS " \
    '$2 == "K" && $3 != "kthreadd" && $5 == all && index(taken, " " $1 " ") == 0 { print $1; exit }')
  [ -n "$KPIN" ] || fail "harness: no unbound kernel thread on CPUs $all left to pin"
  taskset -p -c "$1" "$KPIN" >/dev/null || fail "harness: cannot pin kernel thread $KPIN to CPUs $1"
  ISO_KPINS="$ISO_KPINS $KPIN"
  note "kernel thread $KPIN ($(cat /proc/$KPIN/comm)) pinned to CPUs $1"
}

iso_cleanup() {
  local p d v
  for p in $ISO_KPINS; do taskset -p -c "$(cat /sys/devices/system/cpu/online)" "$p" >/dev/null 2>&1; done
  for v in $ISO_VMS; do
    case " $RELEASED_VMS " in *" ${v%%:*} "*) continue ;; esac
    echo "cleanup: releasing '${v%%:*}'"
    hook "${v%%:*}" stopped end - "${v#*:}"
    hook "${v%%:*}" release end failed "${v#*:}"
  done
  for p in $ISO_PIDS; do kill $p 2>/dev/null; done
  for p in $ISO_PIDS; do wait $p 2>/dev/null; done
  if [ -d $HK_CG ]; then
    for p in $(cat $HK_CG/cgroup.procs); do echo $p > $CG/cgroup.procs 2>/dev/null; done
    rmdir $HK_CG 2>/dev/null
  fi
  for d in $ISO_CGROUPS; do rmdir $d 2>/dev/null; done
  return 0
}
