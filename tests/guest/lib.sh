# Helpers for the guest scenarios (busybox sh). Source with `. /tests/lib.sh`.
# A scenario fails through `fail REASON` (first reason wins) or a non-zero exit.

KT=${KT:-/usr/bin/kvmtune}
STATE_DIR=${KVMTUNE_STATE_DIR:-/run/kvmtune}
NODE_SYS=/sys/devices/system/node
HP2M=2048
HP1G=1048576
KT_REASON=${KT_REASON:-/tmp/reason}
RELEASED_VMS=""

fail() {
  echo "FAIL: $*"
  [ -s "$KT_REASON" ] || echo "$*" > "$KT_REASON"
  exit 1
}
note() { echo "# $*"; }

# wait_until SECONDS COMMAND...: run COMMAND until it succeeds (return 0), at most SECONDS long
# (then return 1; the caller says what did not happen). Waits go through this, not through a
# fixed sleep: under TCG the guest's speed varies with what else the host runs.
wait_until() {
  # In hundredths of a second since boot (the guest's clock, /proc/uptime).
  WAIT_END=$(( $(awk '{ split($1, a, "."); print a[1] * 100 + a[2] }' /proc/uptime) + $1 * 100 ))
  shift
  until "$@"; do
    [ "$(awk '{ split($1, a, "."); print a[1] * 100 + a[2] }' /proc/uptime)" -lt "$WAIT_END" ] || return 1
    sleep 0.1   # the poll interval, not a wait
  done
}

nodes() { ls -d $NODE_SYS/node[0-9]* | sed 's/.*node//' | sort -n; }
node_cpu() { cut -d, -f1 $NODE_SYS/node$1/cpulist | cut -d- -f1; }
# hp NODE SIZE_KB FIELD  (FIELD: nr_hugepages free_hugepages surplus_hugepages)
hp() { cat $NODE_SYS/node$1/hugepages/hugepages-$2kB/$3; }
set_pool() { echo "$3" > $NODE_SYS/node$1/hugepages/hugepages-$2kB/nr_hugepages; }
node_memfree_kb() { awk '/MemFree/{print $4}' $NODE_SYS/node$1/meminfo; }
vmstat() { awk -v k="$1" '$1 == k {print $2}' /proc/vmstat; }
have_size() { [ -d $NODE_SYS/node0/hugepages/hugepages-$1kB ]; }

# Every pool of every node, one line each, plus the global default-size pool.
snapshot() {
  for n in $(nodes); do
    for d in $NODE_SYS/node$n/hugepages/hugepages-*; do
      echo "node$n ${d##*hugepages-} nr=$(cat $d/nr_hugepages) free=$(cat $d/free_hugepages) surplus=$(cat $d/surplus_hugepages)"
    done
  done
  echo "global nr_hugepages=$(cat /proc/sys/vm/nr_hugepages) overcommit=$(cat /proc/sys/vm/nr_overcommit_hugepages)"
}
save_snapshot() { snapshot > "$1"; }
# expect_snapshot FILE WHAT: every pool as in FILE
expect_snapshot() {
  snapshot > /tmp/snap.now
  if ! cmp -s "$1" /tmp/snap.now; then
    echo "pools differ from $1 ($2):"; diff "$1" /tmp/snap.now | sed 's/^/  /'
    fail "$2: pools not as before: $(diff "$1" /tmp/snap.now | grep '^+[^+]' | sed 's/^+//' | tr '\n' ';')"
  fi
  note "$2: every pool as before"
}
# expect_others_unchanged BASEFILE WHAT "node1 2048kB" ...: every pool but the named ones as in BASEFILE
expect_others_unchanged() {
  local base=$1 what=$2 pat='^global'
  shift 2
  for p in "$@"; do pat="$pat|^$p "; done
  grep -Ev "$pat" "$base" > /tmp/snap.base.others
  snapshot | grep -Ev "$pat" > /tmp/snap.now.others
  if ! cmp -s /tmp/snap.base.others /tmp/snap.now.others; then
    diff /tmp/snap.base.others /tmp/snap.now.others | sed 's/^/  /'
    fail "$what: a pool other than [$*] changed: $(diff /tmp/snap.base.others /tmp/snap.now.others | grep '^+[^+]' | sed 's/^+//' | tr '\n' ';')"
  fi
}
show_pools() { snapshot | grep -v ' nr=0 free=0 surplus=0' | sed 's/^/  /'; }

# expect_pool NODE SIZE_KB NR WHAT: nr_hugepages == NR, surplus 0
expect_pool() {
  local nr sur
  nr=$(hp $1 $2 nr_hugepages); sur=$(hp $1 $2 surplus_hugepages)
  [ "$nr" = "$3" ] || fail "$4: node $1 ${2}kB pool has $nr pages, expected $3"
  [ "$sur" = 0 ] || fail "$4: node $1 ${2}kB pool has $sur surplus pages, expected 0"
}

# hook NAME OP SUBOP EXTRA XMLFILE: run kvmtune's hook as libvirt does, XML on stdin.
# Sets HOOK_RC; stdout in /tmp/hook.out, stderr in /tmp/hook.err.
# kvmtune runs on node 0's first CPU so that its own allocations stay off the other nodes.
hook() {
  taskset -c "$(node_cpu 0)" "$KT" hook "$1" "$2" "$3" "$4" < "$5" > /tmp/hook.out 2> /tmp/hook.err
  HOOK_RC=$?
  echo "\$ kvmtune hook '$1' $2 $3 $4 < $5   -> exit $HOOK_RC"
  sed 's/^/  stderr: /' /tmp/hook.err
  sed 's/^/  stdout: /' /tmp/hook.out
  return 0
}
# hook_ok ...: exit 0 and nothing on stdout (libvirt reads stdout only for migrate/restore).
hook_ok() {
  hook "$@"
  [ "$HOOK_RC" = 0 ] || fail "hook $2 $3 $4 of '$1' exited $HOOK_RC: $(head -1 /tmp/hook.err)"
  [ ! -s /tmp/hook.out ] || fail "hook $2 of '$1' wrote to stdout: $(head -1 /tmp/hook.out)"
}
# hook_fails ...: exit 1, exactly one line on stderr, starting `kvmtune: `, nothing on stdout.
hook_fails() {
  hook "$@"
  [ "$HOOK_RC" = 1 ] || fail "hook $2 of '$1' exited $HOOK_RC, expected 1"
  [ "$(wc -l < /tmp/hook.err)" = 1 ] || fail "hook $2 of '$1' failed with $(wc -l < /tmp/hook.err) lines on stderr, expected exactly one"
  case $(cat /tmp/hook.err) in
    "kvmtune: "?*) ;;
    *) fail "hook $2 of '$1': stderr does not start with 'kvmtune: ': $(head -1 /tmp/hook.err)" ;;
  esac
  [ ! -s /tmp/hook.out ] || fail "hook $2 of '$1' wrote to stdout: $(head -1 /tmp/hook.out)"
}

# --- what QEMU does between `start` and `started`: take the VM's pages from the pools -------
# qemu_alloc NAME NODE SIZE_KB COUNT: allocate COUNT pages of NODE's pool through hugetlbfs, as
# QEMU's preallocation does, from a task confined like libvirt confines QEMU for a strict
# numatune: a cgroup v2 cpuset with cpuset.mems=NODE (on node 0's CPU, so that the kernel memory
# the task itself needs stays on node 0). Checks that the pages came from NODE; fails when the
# node's free pages do not cover them, as QEMU's preallocation would.
hp_mount() {
  local d=/run/hp-$1
  grep -q " $d hugetlbfs " /proc/mounts && { echo $d; return 0; }
  mkdir -p $d && mount -t hugetlbfs -o pagesize=$1K none $d || return 1
  echo $d
}
qemu_cgroup() {   # qemu_cgroup NODE: prints the cgroup dir of a QEMU bound to NODE
  local cg=/sys/fs/cgroup/kt-qemu-node$1
  grep -q cpuset /sys/fs/cgroup/cgroup.subtree_control || echo +cpuset > /sys/fs/cgroup/cgroup.subtree_control || return 1
  [ -d $cg ] || mkdir $cg || return 1
  node_cpu 0 > $cg/cpuset.cpus && echo $1 > $cg/cpuset.mems || return 1
  echo $cg
}
qemu_alloc() {
  local d cg before after
  d=$(hp_mount $3) || fail "harness: cannot mount hugetlbfs pagesize=$3K"
  cg=$(qemu_cgroup $2) || fail "harness: cannot make a cpuset cgroup with mems=$2"
  before=$(hp $2 $3 free_hugepages)
  if ! sh -c 'echo $$ > "$1/cgroup.procs" && exec fallocate -l "$2" "$3"' sh "$cg" $(( $4 * $3 * 1024 )) "$d/$1.node$2" 2>/tmp/falloc.err; then
    rm -f "$d/$1.node$2"
    fail "QEMU of '$1' could not get $4 x ${3}kB pages on node $2 (node $2 had $before free): $(cat /tmp/falloc.err)"
  fi
  after=$(hp $2 $3 free_hugepages)
  [ $((before - after)) = "$4" ] ||
    fail "QEMU of '$1' wanted $4 x ${3}kB pages on node $2 but node $2's free pages went $before -> $after"
  note "QEMU of '$1' holds $4 x ${3}kB pages on node $2"
}
# qemu_standin NAME: a process whose command line names the VM as libvirt's QEMU does
# (`-name guest=NAME,debug-threads=on`), so that kvmtune sees the VM run: `status` judges a
# running VM without one as gone, and `recover --all` and `kvmtune watch` release it. It waits
# on a FIFO, with no child of its own; qemu_exit ends it.
QEMU_STANDINS=""
qemu_standin() {
  local fifo
  fifo=/tmp/kt-qemu-$(echo "$1" | tr -c 'A-Za-z0-9\n-' _).fifo
  [ -p "$fifo" ] || mkfifo "$fifo" || fail "harness: cannot make $fifo"
  sh -c 'exec 3<>"$0"; read x <&3' "$fifo" -name "guest=$1,debug-threads=on" &
  QEMU_STANDINS="$QEMU_STANDINS $!:$1"
}
# qemu_exit NAME: QEMU is gone, its pages are free again.
qemu_exit() {
  local e left=""
  rm -f /run/hp-*/"$1".node*
  for e in $QEMU_STANDINS; do
    if [ "${e#*:}" = "$1" ]; then
      kill "${e%%:*}" 2>/dev/null; wait "${e%%:*}" 2>/dev/null
    else
      left="$left $e"
    fi
  done
  QEMU_STANDINS=$left
}

# vm_prepare NAME XML / vm_run NAME XML [NODE:SIZE_KB:COUNT ...] / vm_stop NAME XML [REASON]
vm_prepare() { hook_ok "$1" prepare begin - "$2"; }
vm_run() {
  local name=$1 xml=$2 spec
  shift 2
  hook_ok "$name" start begin - "$xml"
  for spec in "$@"; do
    qemu_alloc "$name" "${spec%%:*}" "$(echo $spec | cut -d: -f2)" "${spec##*:}"
  done
  qemu_standin "$name"
  hook_ok "$name" started begin - "$xml"
}
vm_start() { local name=$1 xml=$2; shift 2; vm_prepare "$name" "$xml"; vm_run "$name" "$xml" "$@"; }
vm_stop() {
  qemu_exit "$1"
  hook_ok "$1" stopped end - "$2"
  hook_ok "$1" release end "${3:--}" "$2"
  RELEASED_VMS="$RELEASED_VMS $1"
}

# mkdom FILE NAME MEM_MIB [PAGE_XML] [NUMATUNE_XML] [CPU_XML]: a domain XML as libvirt hands
# it to the hook (memory in KiB, as libvirt formats it).
mkdom() {
  local hp="<hugepages/>"
  [ -n "${4:-}" ] && hp="<hugepages>$4</hugepages>"
  cat > "$1" <<EOF
<domain type='kvm' id='1'>
  <name>$2</name>
  <uuid>$(cat /proc/sys/kernel/random/uuid)</uuid>
  <memory unit='KiB'>$(( $3 * 1024 ))</memory>
  <currentMemory unit='KiB'>$(( $3 * 1024 ))</currentMemory>
  <memoryBacking>
    $hp
  </memoryBacking>
  <vcpu placement='static'>2</vcpu>
  ${5:-}
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
  </os>
  ${6:-}
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='pty'><target port='0'/></serial>
  </devices>
</domain>
EOF
}
strict() { echo "<numatune><memory mode='strict' nodeset='$1'/></numatune>"; }
interleave() { echo "<numatune><memory mode='interleave' nodeset='$1'/></numatune>"; }

# policy FLOOR [COMPACTION] [TIMEOUT]: write a host policy and point KVMTUNE_CONFIG at it.
policy() {
  mkdir -p /etc/kvmtune
  cat > /etc/kvmtune/kvmtune.toml <<EOF
[hugepages]
node_memory_floor = "$1"
compaction = ${2:-true}
timeout = "${3:-10s}"
EOF
  export KVMTUNE_CONFIG=/etc/kvmtune/kvmtune.toml
  note "policy: floor=$1 compaction=${2:-true} timeout=${3:-10s}"
}

# check_state_clean: after every VM of the scenario was released, the state dir holds no
# journal (nothing but the lock and a ledger), and nothing in it names a released VM.
check_state_clean() {
  local f
  echo "state dir $STATE_DIR:"
  [ -d "$STATE_DIR" ] || { echo "  (absent)"; return 0; }
  find "$STATE_DIR" | sort | while read -r f; do echo "  $(ls -ld "$f" | awk '{print $1, $5}') $f"; done
  for f in $(find "$STATE_DIR" -type f); do
    case ${f##*/} in
      lock) continue ;;
      # Statistics, not state: counted failures and compactions, the watcher's last look.
      counters.json | watch.json) continue ;;
      ledger|ledger.*) ;;
      *) fail "state dir holds $f after every VM was released (a leftover journal?)" ;;
    esac
    for vm in $RELEASED_VMS; do
      if grep -qF -e "$vm" "$f"; then
        echo "  $f:"; head -c 2000 "$f" | sed 's/^/    /'; echo
        fail "state file $f still names released VM '$vm'"
      fi
    done
  done
  note "state dir clean"
}
