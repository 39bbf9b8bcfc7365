# shellcheck shell=bash
# Shared by tests/libvirt/run.sh and scripts/demo.sh: bring up the machine's real libvirtd with
# kvmtune installed as its QEMU hook, and take down exactly what was brought up.
#
#   source tests/libvirt/lib.sh
#   lt_setup /path/to/kvmtune        # deps, hugetlbfs, hook, virtlogd + libvirtd; installs an EXIT trap
#   LT_INSTALLED=1 lt_setup /usr/sbin/kvmtune   # the same against the installed package: its hook
#                                    # is used as it is, never created, replaced or removed here
#   lt_define NAME FILE.xml          # define a domain; it is destroyed and undefined at teardown
#   ...                               # lt_teardown runs on exit (or call it yourself)
#
# Order matters (ENVIRONMENT.md): libvirtd finds hugetlbfs mounts and hook scripts once, when it
# starts, so the mount and the hook go in first. Nothing that existed before is overwritten:
# an existing /etc/libvirt/hooks/qemu is never touched, a libvirtd already running with our hook
# is reused (and left running), and every hugepage pool gets its starting size back.

LT_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LT_URI=qemu:///system
LT_HOOK_DIR=/etc/libvirt/hooks/qemu.d
LT_HOOK=$LT_HOOK_DIR/kvmtune
# The hook is a symlink to a private copy of the binary under test, so a package's
# /usr/sbin/kvmtune is never replaced. argv[0] stays .../qemu.d/kvmtune, which selects hook mode.
LT_BIN_DIR=/usr/local/lib/kvmtune-test
LT_BIN_COPY=$LT_BIN_DIR/kvmtune
# LT_INSTALLED=1: test the installed package (tests/package/run.sh). Its hook is a symlink to
# LT_PACKAGE_BIN that dpkg owns; this library leaves it alone.
LT_INSTALLED=${LT_INSTALLED:-0}
LT_PACKAGE_BIN=/usr/sbin/kvmtune
LT_STATE_DIR=/run/kvmtune
LT_LOG_DIR=${LT_LOG_DIR:-/tmp/kvmtune-libvirt-logs}
LT_DOMAIN_PREFIX=kvmtune-test-
# kvmtune's host policy: the hook reads it (libvirt gives hooks no environment). Written only
# when it did not exist (see lt_write_policy), removed at teardown.
LT_POLICY=/etc/kvmtune/kvmtune.toml
LT_POLICY_MARK='# kvmtune-test policy'
# What kvmtune changes for CPU isolation on a cgroup v1 host (see lt_isolation_safety_net),
# besides IRQ affinities (/proc/irq).
LT_CPUSET_ROOT=/sys/fs/cgroup/cpuset
LT_ISO_CPUSET=$LT_CPUSET_ROOT/kvmtune
LT_WQ_MASKS=(/sys/devices/virtual/workqueue/cpumask /sys/bus/workqueue/devices/writeback/cpumask)

# What this process created or started, for lt_teardown.
LT_STARTED_PIDS=()      # "name:pid", in start order
LT_CREATED=()           # files and directories to remove, in creation order
LT_DOMAINS=()           # domains we defined
LT_MOUNTED_HUGETLBFS=0
LT_KVM_WAS=""            # "MODE GID" of /dev/kvm when lt_kvm_device changed it
LT_STATE_DIR_EXISTED=1
declare -A LT_POOLS_AT_START=()
LT_TORN_DOWN=0
LT_POLICY_OURS=0
LT_ISO_CPUSET_EXISTED=1
declare -A LT_WQ_AT_START=()
declare -A LT_KTHREADS_AT_START=()   # "pid:starttime" -> Cpus_allowed_list of movable kernel threads
declare -A LT_IRQS_AT_START=()       # /proc/irq/N/smp_affinity_list and default_smp_affinity -> value

lt_log() { printf '%s\n' "$*" >&2; }
lt_die() { lt_log "lib.sh: $*"; exit 1; }

virsh_() { virsh -q -c "$LT_URI" "$@"; }

# lt_wait_until SECONDS COMMAND…: run COMMAND until it succeeds (return 0), at most SECONDS
# long (then return 1; the caller says what did not happen). Waits go through this, not through
# a fixed sleep: a sleep long enough on a loaded machine is wasted time on an idle one, and one
# that is short enough there fails on the loaded one.
lt_wait_until() {
  local deadline=$((${EPOCHREALTIME/[.,]/} + $1 * 1000000))   # in µs (bash's clock, no fork)
  shift
  until "$@"; do
    ((${EPOCHREALTIME/[.,]/} < deadline)) || return 1
    sleep 0.1   # the poll interval, not a wait
  done
}

# ---- hugepage pools ------------------------------------------------------------------------

# Every writable pool size file: per node and size, plus the global default-size count.
lt_pool_files() {
  ls -d /sys/devices/system/node/node*/hugepages/hugepages-*kB/nr_hugepages 2>/dev/null
  echo /proc/sys/vm/nr_hugepages
}

# One line per pool file: "path value". Used to compare the whole host before and after.
lt_pools_snapshot() {
  local f
  for f in $(lt_pool_files); do printf '%s %s\n' "$f" "$(cat "$f")"; done
}

# node0 2 MiB pool: lt_pool 0 2048 [nr_hugepages|free_hugepages|surplus_hugepages]
lt_pool() {
  cat "/sys/devices/system/node/node$1/hugepages/hugepages-$2kB/${3:-nr_hugepages}"
}

lt_set_pool() {
  echo "$3" >"/sys/devices/system/node/node$1/hugepages/hugepages-$2kB/nr_hugepages"
}

# ---- daemons -------------------------------------------------------------------------------

lt_libvirt_answers() { timeout 10 virsh -c "$LT_URI" version >/dev/null 2>&1; }

# Pid of a running daemon from its pidfile, if the process is alive and is that daemon.
lt_daemon_pid() {
  local name=$1 pid
  pid=$(cat "/run/$name.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(command -v "$name")" ] || return 1
  echo "$pid"
}

# Start NAME in the background, detached from our terminal, logging to a file; record its pid.
lt_start_daemon() {
  local name=$1 pid i
  shift
  mkdir -p "$LT_LOG_DIR"
  setsid "$name" "$@" {LT_LOCK_FD}>&- </dev/null >"$LT_LOG_DIR/$name.log" 2>&1 &
  local launcher=$!
  # setsid execs in place when we are not a process-group leader, forks otherwise: the pidfile
  # the daemon writes is the reliable answer.
  for i in $(seq 1 100); do
    if pid=$(lt_daemon_pid "$name"); then
      LT_STARTED_PIDS+=("$name:$pid")
      return 0
    fi
    kill -0 "$launcher" 2>/dev/null || [ "$i" -lt 5 ] || break
    sleep 0.1
  done
  lt_log "lib.sh: $name did not start; its log ($LT_LOG_DIR/$name.log):"
  tail -20 "$LT_LOG_DIR/$name.log" >&2
  return 1
}

lt_stop_pid() {
  local name=$1 pid=$2 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  lt_log "lib.sh: $name ($pid) ignored SIGTERM for 10 s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# When process PID started, in seconds since the epoch (from /proc/PID/stat and btime).
lt_pid_started() {
  local ticks btime
  ticks=$(sed 's/^.*) //' "/proc/$1/stat" | awk '{print $20}') || return 1
  btime=$(awk '/^btime/{print $2}' /proc/stat)
  echo $((btime + ticks / $(getconf CLK_TCK)))
}

# True when the hook file was in place before libvirtd PID started (so that daemon runs it).
lt_hook_older_than() {
  [ "$(stat -c %Z "$LT_HOOK")" -le "$(lt_pid_started "$1")" ]
}

# The unit of the daemon that answers on qemu:///system when systemd runs it, else nothing
# (and false): on such a host the tests use that daemon as it is and leave it running.
LT_SYSTEMD_UNIT=""
lt_systemd_daemon() {
  local unit
  [ -d /run/systemd/system ] || return 1
  for unit in libvirtd.service virtqemud.service; do
    systemctl is-active --quiet "$unit" && { echo "$unit"; return 0; }
  done
  return 1
}

lt_start_libvirtd() {
  # Debug output of libvirt's hook code, so a failure can tell "hook not run" from "hook ran
  # and did nothing" (see lt_hook_calls), and of its command runner, whose "Result" line says
  # when each hook call returned (see lt_hook_ms).
  LIBVIRT_LOG_FILTERS="1:util.hook 1:util.command" LIBVIRT_LOG_OUTPUTS="1:file:$LT_LOG_DIR/libvirtd-debug.log" \
    lt_start_daemon libvirtd || return 1
  for _ in $(seq 1 150); do lt_libvirt_answers && return 0; sleep 0.2; done
  return 1
}

# The pid of the libvirtd this process started, or nothing.
lt_our_libvirtd() {
  local e
  for e in "${LT_STARTED_PIDS[@]}"; do [ "${e%%:*}" = libvirtd ] && kill -0 "${e#*:}" 2>/dev/null && echo "${e#*:}"; done
}

# Stop the libvirtd we started and start it again (running VMs survive, and get `reconnect`).
lt_restart_libvirtd() {
  local pid e kept=()
  pid=$(lt_our_libvirtd) || true
  [ -n "$pid" ] || return 1
  lt_stop_pid libvirtd "$pid"
  for e in "${LT_STARTED_PIDS[@]}"; do [ "$e" = "libvirtd:$pid" ] || kept+=("$e"); done
  LT_STARTED_PIDS=("${kept[@]}")
  lt_start_libvirtd
}

# ---- the hook --------------------------------------------------------------------------------

lt_mkdir() {  # mkdir -p that records each directory it creates
  local d=$1 missing=()
  while [ ! -e "$d" ]; do missing=("$d" "${missing[@]}"); d=$(dirname "$d"); done
  for d in "${missing[@]}"; do mkdir "$d" && LT_CREATED+=("$d"); done
}

# Put the binary under test in place; atomic, so a hook that runs meanwhile sees old or new.
lt_copy_binary() {
  local bin=$1
  lt_mkdir "$LT_BIN_DIR"
  [ -e "$LT_BIN_COPY" ] || LT_CREATED+=("$LT_BIN_COPY")
  cp "$bin" "$LT_BIN_COPY.tmp.$$"
  chmod 0755 "$LT_BIN_COPY.tmp.$$"
  mv -f "$LT_BIN_COPY.tmp.$$" "$LT_BIN_COPY"
}

# The binary libvirt runs as the hook: the package's, or this test's private copy.
lt_hook_bin() {
  if [ "$LT_INSTALLED" = 1 ]; then echo "$LT_PACKAGE_BIN"; else echo "$LT_BIN_COPY"; fi
}

# Where symlink PATH points, as an absolute path without resolving further links.
lt_link_target() {
  local t
  t=$(readlink "$1") || return 1
  case "$t" in /*) ;; *) t=$(dirname "$1")/$t ;; esac
  realpath -m -s "$t"
}

# True when the package's hook is in place (a symlink to the package's binary).
lt_hook_is_package() {
  [ -L "$LT_HOOK" ] && [ "$(lt_link_target "$LT_HOOK")" = "$LT_PACKAGE_BIN" ]
}

# True when the hook installed is ours (a symlink to the private copy, or the capture wrapper).
lt_hook_is_ours() {
  { [ -L "$LT_HOOK" ] && [ "$(readlink "$LT_HOOK")" = "$LT_BIN_COPY" ]; } \
    || { [ -f "$LT_HOOK" ] && [ ! -L "$LT_HOOK" ] && grep -qs '^# kvmtune-test hook wrapper$' "$LT_HOOK"; }
}

# With LT_CAPTURE_STDIN_DIR set, the hook is a wrapper that keeps a copy of what libvirt writes
# on the hook's stdin (DIR/NAME.OP.SUBOP.xml), then runs the binary under test with the same
# argv[0] (.../qemu.d/kvmtune) and that stdin. For fixtures only: stdin may hold secrets.
lt_install_capture_wrapper() {
  local dir=$1
  mkdir -p "$dir"
  cat >"$LT_HOOK.tmp.$$" <<WRAPPER
#!/bin/bash
# kvmtune-test hook wrapper
mkdir -p "$dir"
f="$dir/\${1//\//_}.\${2:-}.\${3:-}.xml"
cat >"\$f"
exec -a "\$0" "$LT_BIN_COPY" "\$@" <"\$f"
WRAPPER
  chmod 0755 "$LT_HOOK.tmp.$$"
  mv -f "$LT_HOOK.tmp.$$" "$LT_HOOK"
}

# The hook calls libvirtd made for domain NAME, e.g. "prepare begin, start begin, started begin".
# Known only when we started libvirtd (its hook debug log); empty otherwise.
lt_hook_calls() {
  # Only a libvirtd this library started writes that log (not systemd's): then nothing is known.
  [ -f "$LT_LOG_DIR/libvirtd-debug.log" ] || return 0
  grep -sF " id=$1 op=" "$LT_LOG_DIR/libvirtd-debug.log" \
    | sed -n 's/.* op=\([^ ]*\) subop=\([^ ]*\) extra=\(.*\)$/\1 \2 \3/p' | paste -sd, | sed 's/,/, /g'
}

# Milliseconds between the prepare and the start hook calls for NAME: what the prepare hook
# (kvmtune's verdict) cost, as libvirtd saw it. Empty when unknown.
lt_prepare_ms() {
  grep -sF " id=$1 op=" "$LT_LOG_DIR/libvirtd-debug.log" | awk '
    / op=prepare subop=begin/ && !p { split($2, a, /[:+]/); p = ((a[1] * 60 + a[2]) * 60 + a[3]) * 1000 }
    / op=start subop=begin/ && p && !s { split($2, a, /[:+]/); s = ((a[1] * 60 + a[2]) * 60 + a[3]) * 1000 }
    END { if (p && s) printf "%d\n", s - p }'
}

# lt_hook_ms NAME OP SUBOP [FROM_LINE]: how long each "OP SUBOP" hook call for NAME took, as
# libvirtd saw it (from "Calling hook" to its command runner's "Result" line, in the same
# thread), in milliseconds, one line per call in log order; only log lines after FROM_LINE
# (see lt_debug_log_lines). Nothing for a call whose end is not in the log: a libvirtd not
# started by lt_start_libvirtd does not log it.
lt_hook_ms() {
  tail -n +"$((${4:-0} + 1))" "$LT_LOG_DIR/libvirtd-debug.log" 2>/dev/null | awk -v want=" id=$1 op=$2 subop=$3 " '
    function ms(t, a) { split(t, a, /[:+]/); return ((a[1] * 60 + a[2]) * 60 + a[3]) * 1000 }
    / : Calling hook / && index($0 " ", want) { start[$3] = ms($2); next }
    ($3 in start) && $6 ~ /^virCommandRun:/ && / : Result / {
      d = ms($2) - start[$3]; if (d < 0) d += 86400000
      printf "%d\n", d; delete start[$3] }'
}

# How many lines libvirtd's debug log has now: a FROM_LINE for lt_hook_ms.
lt_debug_log_lines() { wc -l <"$LT_LOG_DIR/libvirtd-debug.log" 2>/dev/null || echo 0; }

# ---- domains ---------------------------------------------------------------------------------

lt_define() {  # NAME FILE
  virsh_ define "$2" >/dev/null || return 1
  LT_DOMAINS+=("$1")
}

lt_domain_state() { virsh_ domstate "$1" 2>/dev/null | head -1; }

lt_destroy_quiet() {
  [ "$(lt_domain_state "$1")" = "shut off" ] || virsh_ destroy "$1" >/dev/null 2>&1 || true
}

lt_undefine() {
  lt_destroy_quiet "$1"
  virsh_ undefine --nvram "$1" >/dev/null 2>&1 || virsh_ undefine "$1" >/dev/null 2>&1 || true
}

# ---- kvmtune's policy -------------------------------------------------------------------------

# lt_write_policy TEXT: make TEXT the host policy for this run. Refuses (returns 1, writes
# nothing) when a policy existed before this run: that one is the admin's. A file carrying our
# mark is a left-over of an interrupted run and is taken over.
lt_write_policy() {
  if [ "$LT_POLICY_OURS" = 0 ]; then
    if [ -e "$LT_POLICY" ] || [ -L "$LT_POLICY" ]; then
      grep -qsxF "$LT_POLICY_MARK" "$LT_POLICY" || return 1
      lt_log "lib.sh: taking over the left-over test policy $LT_POLICY"
    fi
    lt_mkdir "$(dirname "$LT_POLICY")"
    LT_CREATED+=("$LT_POLICY")
    LT_POLICY_OURS=1
  fi
  # Root-owned and not group/other-writable, or kvmtune refuses it. Atomic for a running hook.
  (umask 022 && printf '%s\n%s\n' "$LT_POLICY_MARK" "$1" >"$LT_POLICY.tmp.$$") || return 1
  mv -f "$LT_POLICY.tmp.$$" "$LT_POLICY"
}

# True when a policy this run did not write is in place.
lt_policy_is_foreign() {
  [ "$LT_POLICY_OURS" = 0 ] && { [ -e "$LT_POLICY" ] || [ -L "$LT_POLICY" ]; } \
    && ! grep -qsxF "$LT_POLICY_MARK" "$LT_POLICY"
}

# ---- CPU isolation safety net ------------------------------------------------------------------

# What kvmtune's isolation changes, as found at setup: whether its cpuset existed, the workqueue
# masks, the affinity of the kernel threads it may move.
lt_isolation_record() {
  local f d stat rest flags k v
  local -a fld
  [ -d "$LT_ISO_CPUSET" ] || LT_ISO_CPUSET_EXISTED=0
  for f in "${LT_WQ_MASKS[@]}"; do [ -r "$f" ] && LT_WQ_AT_START[$f]=$(cat "$f"); done
  for f in /proc/irq/[0-9]*/smp_affinity_list /proc/irq/default_smp_affinity; do
    [ -r "$f" ] && LT_IRQS_AT_START[$f]=$(cat "$f")
  done
  for d in /proc/[0-9]*; do
    read -r stat 2>/dev/null <"$d/stat" || continue   # the process may be gone: quietly
    rest=${stat##*) }
    read -ra fld <<<"$rest"
    [ "${#fld[@]}" -ge 20 ] || continue
    flags=${fld[6]}
    if ! ((flags & 0x00200000)) || ((flags & 0x04000000)); then continue; fi
    while read -r k v; do [ "$k" = Cpus_allowed_list: ] && break; done <"$d/status"
    LT_KTHREADS_AT_START["${d#/proc/}:${fld[19]}"]=$v
  done
}

# At teardown, after our VMs are gone: if kvmtune left its isolation in place (a failure the
# tests report), put the host back as it was at setup, so a broken hook does not leave the
# machine's processes confined. Only what kvmtune's isolation created or changed is touched.
lt_isolation_safety_net() {
  local f key pid start stat rest repaired=0 name
  local -a fld
  # Our domains are gone: what kvmtune's state still holds for them, kvmtune itself releases.
  for name in "${LT_DOMAINS[@]}"; do
    grep -rqsF -- "\"$name\"" "$LT_STATE_DIR" || continue
    lt_log "lib.sh: $LT_STATE_DIR still holds state for $name; kvmtune recover $name"
    "$(lt_hook_bin)" recover "$name" >&2
  done
  if [ "$LT_ISO_CPUSET_EXISTED" = 0 ] && [ -d "$LT_ISO_CPUSET" ]; then
    lt_log "lib.sh: $LT_ISO_CPUSET is still there after our VMs stopped; moving its tasks back to the root cpuset and removing it"
    for _ in 1 2 3; do
      while read -r pid; do echo "$pid" >"$LT_CPUSET_ROOT/cgroup.procs" 2>/dev/null; done <"$LT_ISO_CPUSET/cgroup.procs"
      rmdir "$LT_ISO_CPUSET" 2>/dev/null && break
      sleep 0.2
    done
    [ -d "$LT_ISO_CPUSET" ] && lt_log "lib.sh: could not remove $LT_ISO_CPUSET"
    repaired=1
  fi
  for f in "${!LT_WQ_AT_START[@]}"; do
    if [ "$(cat "$f")" != "${LT_WQ_AT_START[$f]}" ]; then
      lt_log "lib.sh: $f is $(cat "$f"), ${LT_WQ_AT_START[$f]} at setup; restoring it"
      echo "${LT_WQ_AT_START[$f]}" >"$f" || lt_log "lib.sh: could not restore $f"
      repaired=1
    fi
  done
  for key in "${!LT_KTHREADS_AT_START[@]}"; do
    pid=${key%%:*} start=${key#*:}
    read -r stat 2>/dev/null <"/proc/$pid/stat" || continue
    rest=${stat##*) }
    read -ra fld <<<"$rest"
    if [ "${#fld[@]}" -lt 20 ] || [ "${fld[19]}" != "$start" ]; then continue; fi
    [ "$(awk '/^Cpus_allowed_list:/{print $2}' "/proc/$pid/status")" = "${LT_KTHREADS_AT_START[$key]}" ] && continue
    taskset -pc "${LT_KTHREADS_AT_START[$key]}" "$pid" >/dev/null 2>&1 && repaired=1
  done
  # IRQ affinities kvmtune moved and did not give back. A running irqbalance moves IRQs too:
  # then they are only reported.
  for f in "${!LT_IRQS_AT_START[@]}"; do
    if [ ! -r "$f" ] || [ "$(cat "$f")" = "${LT_IRQS_AT_START[$f]}" ]; then continue; fi
    if pgrep -x irqbalance >/dev/null; then
      lt_log "lib.sh: $f is $(cat "$f"), ${LT_IRQS_AT_START[$f]} at setup (irqbalance runs: left as it is)"
    else
      lt_log "lib.sh: $f is $(cat "$f"), ${LT_IRQS_AT_START[$f]} at setup; restoring it"
      echo "${LT_IRQS_AT_START[$f]}" >"$f" 2>/dev/null || lt_log "lib.sh: could not restore $f"
      repaired=1
    fi
  done
  [ "$repaired" = 0 ] || lt_log "lib.sh: repaired CPU isolation that kvmtune left behind"
}

# ---- setup and teardown ----------------------------------------------------------------------

# /dev/kvm as udev makes it on the hosts operators run (systemd's 50-udev-default.rules:
# GROUP="kvm", MODE="0666"). A machine without udev may leave it root's alone (0600): libvirt's
# capabilities probe (QEMU run with CAP_DAC_OVERRIDE) then finds KVM, while libvirt's own check
# as the qemu user does not, so it takes its capabilities cache as outdated at every lookup and
# probes QEMU again and again: about 40 s of every domain's define and start. lt_teardown puts
# the device back as it was.
lt_kvm_device() {
  [ -c /dev/kvm ] && [ "$(stat -c '%a %g' /dev/kvm)" = "600 0" ] && getent group kvm >/dev/null || return 0
  LT_KVM_WAS="600 0"
  chgrp kvm /dev/kvm && chmod 0666 /dev/kvm || lt_log "lib.sh: could not open /dev/kvm to group kvm"
  lt_log "lib.sh: /dev/kvm was root's alone (no udev here): group kvm, mode 0666 while the tests run"
}
lt_kvm_device_back() {
  [ -n "$LT_KVM_WAS" ] || return 0
  chmod "${LT_KVM_WAS% *}" /dev/kvm && chgrp "${LT_KVM_WAS#* }" /dev/kvm || lt_log "lib.sh: could not put /dev/kvm back to $LT_KVM_WAS"
}

lt_setup() {
  local bin=$1 f name pid
  [ "$(id -u)" = 0 ] || lt_die "needs root (it starts libvirtd and resizes hugepage pools)"
  # The package's binary may come only later (tests/package/run.sh installs it after libvirtd runs).
  [ "$LT_INSTALLED" = 1 ] || [ -x "$bin" ] || lt_die "no kvmtune binary at '$bin'"
  if [ "${LT_SKIP_DEPS:-0}" != 1 ]; then
    "$LT_REPO/tests/deps.sh" >&2 || lt_die "tests/deps.sh failed"
  fi

  # One user of the real host at a time: two runs (a test tier and the demo, or two worktrees)
  # would share libvirtd, the pools and the cpusets, and each would restore the other's changes.
  # The lock is on an fd this shell keeps, so it ends with the process; wait for it, don't fail.
  # A caller that holds the lock already (tests/package/run.sh, around dpkg and this tier) hands
  # down its descriptor in LT_HOST_LOCK_FD: flock on that same open file succeeds at once.
  if [ -n "${LT_HOST_LOCK_FD:-}" ]; then
    LT_LOCK_FD=$LT_HOST_LOCK_FD
  else
    exec {LT_LOCK_FD}>"${LT_HOST_LOCK:-/run/lock/kvmtune-real-host.lock}"
  fi
  flock "$LT_LOCK_FD" || lt_die "cannot take the host lock on fd $LT_LOCK_FD"

  trap lt_teardown EXIT
  trap 'exit 130' INT TERM

  for f in $(lt_pool_files); do LT_POOLS_AT_START[$f]=$(cat "$f"); done
  lt_isolation_record
  lt_kvm_device
  [ -d "$LT_STATE_DIR" ] || LT_STATE_DIR_EXISTED=0

  if lt_libvirt_answers && LT_SYSTEMD_UNIT=$(lt_systemd_daemon); then
    # The daemon of a systemd host (libvirtd, or the modular virtqemud): it stays systemd's and
    # keeps running; a reload makes it read qemu.d again without touching running VMs.
    if lt_hook_is_package && cmp -s "$LT_PACKAGE_BIN" "$bin"; then
      lt_log "lib.sh: using $LT_SYSTEMD_UNIT (systemd's) with the package's hook"
    elif [ "$LT_INSTALLED" = 1 ]; then
      lt_hook_is_package || lt_die "$LT_HOOK is not the package's hook"
    elif lt_hook_is_ours; then
      lt_copy_binary "$bin"
    elif [ -e "$LT_HOOK" ] || [ -L "$LT_HOOK" ]; then
      lt_die "$LT_HOOK exists and is not the binary under test; not overwriting it"
    else
      lt_copy_binary "$bin"
      lt_mkdir "$LT_HOOK_DIR"
      ln -s "$LT_BIN_COPY" "$LT_HOOK"
      LT_CREATED+=("$LT_HOOK")
    fi
    systemctl reload "$LT_SYSTEMD_UNIT" || lt_die "systemctl reload $LT_SYSTEMD_UNIT failed"
  elif lt_libvirt_answers; then
    # A libvirtd we did not start. It sees only the hooks that existed when it started.
    pid=$(lt_daemon_pid libvirtd) || pid=
    if [ "$LT_INSTALLED" = 1 ]; then
      if ! { [ -n "$pid" ] && lt_hook_is_package && lt_hook_older_than "$pid"; }; then
        lt_die "libvirtd is already running, and was not started after the package's hook $LT_HOOK was installed.
  libvirtd reads its hooks when it starts (or on SIGHUP): restart it, then rerun."
      fi
      lt_log "lib.sh: reusing the running libvirtd ($pid) with the package's hook"
    elif lt_hook_is_ours && [ -n "$pid" ] && lt_hook_older_than "$pid"; then
      lt_log "lib.sh: reusing the running libvirtd ($pid) with kvmtune's test hook; refreshing the binary"
      lt_copy_binary "$bin"
    elif [ -e "$LT_HOOK" ] && [ -n "$pid" ] && cmp -s "$(readlink -f "$LT_HOOK")" "$bin" \
      && lt_hook_older_than "$pid"; then
      lt_log "lib.sh: reusing the running libvirtd ($pid); its hook $LT_HOOK is the binary under test"
    else
      lt_die "libvirtd is already running without the binary under test as its hook ($LT_HOOK).
  libvirtd reads its hooks when it starts: stop it, or install the hook and restart it, then rerun."
    fi
  else
    if [ "$LT_INSTALLED" = 1 ]; then
      # The package's hook, as dpkg left it; tests/package/run.sh may install the package only
      # after libvirtd started, to check that a reload makes it see the hook.
      lt_hook_is_package || lt_log "lib.sh: $LT_HOOK is not the package's hook (yet)"
    else
      if [ -e "$LT_HOOK" ] || [ -L "$LT_HOOK" ]; then
        lt_hook_is_ours || lt_die "$LT_HOOK exists and is not this test's hook; not overwriting it"
        rm -f "$LT_HOOK"   # left over from an interrupted run: take it over
      fi
      lt_copy_binary "$bin"
      lt_mkdir "$LT_HOOK_DIR"
      ln -s "$LT_BIN_COPY" "$LT_HOOK"
      LT_CREATED+=("$LT_HOOK")
      # /etc/libvirt/hooks/qemu, if any, is someone else's: it runs before ours; we leave it be.
      [ -z "${LT_CAPTURE_STDIN_DIR:-}" ] || lt_install_capture_wrapper "$LT_CAPTURE_STDIN_DIR"
    fi

    if ! grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts; then
      lt_mkdir /dev/hugepages
      mount -t hugetlbfs hugetlbfs /dev/hugepages || lt_die "cannot mount hugetlbfs at /dev/hugepages"
      LT_MOUNTED_HUGETLBFS=1
    fi

    lt_daemon_pid virtlogd >/dev/null || lt_start_daemon virtlogd || lt_die "virtlogd did not start"
    # Debug output of libvirt's hook code only, so a failure can tell "hook not run" from
    # "hook ran and did nothing" (see lt_hook_calls).
    mkdir -p "$LT_LOG_DIR" && : >"$LT_LOG_DIR/libvirtd-debug.log"
    lt_start_libvirtd || lt_die "libvirtd did not start, or $LT_URI does not answer (log: $LT_LOG_DIR/libvirtd.log)"
  fi

  # Domains with our prefix are left-overs of an interrupted run.
  for name in $(virsh_ list --all --name | grep "^$LT_DOMAIN_PREFIX" || true); do
    lt_log "lib.sh: removing left-over domain $name"
    lt_undefine "$name"
  done
}

lt_teardown() {
  local status=$? f i entry name pid
  [ "$LT_TORN_DOWN" = 1 ] && return "$status"
  LT_TORN_DOWN=1
  set +e
  for name in "${LT_DOMAINS[@]}"; do lt_undefine "$name"; done
  # Daemons in reverse start order.
  for ((i = ${#LT_STARTED_PIDS[@]} - 1; i >= 0; i--)); do
    entry=${LT_STARTED_PIDS[$i]}
    lt_stop_pid "${entry%%:*}" "${entry#*:}"
  done
  lt_isolation_safety_net
  lt_kvm_device_back
  # libvirt's per-VM QEMU logs of our domains: kept with our logs, not left in /var/log.
  for name in "${LT_DOMAINS[@]}"; do
    f=/var/log/libvirt/qemu/$name.log
    [ -f "$f" ] && mkdir -p "$LT_LOG_DIR" && mv -f "$f" "$LT_LOG_DIR/qemu-$name.log"
  done
  if [ "$LT_MOUNTED_HUGETLBFS" = 1 ]; then
    umount /dev/hugepages || lt_log "lib.sh: could not unmount /dev/hugepages"
  fi
  for ((i = ${#LT_CREATED[@]} - 1; i >= 0; i--)); do
    f=${LT_CREATED[$i]}
    if [ -d "$f" ] && [ ! -L "$f" ]; then rmdir "$f" 2>/dev/null; else rm -f "$f"; fi
  done
  # systemd's daemon forgets the hook we removed (it keeps running, as we found it).
  [ -z "$LT_SYSTEMD_UNIT" ] || systemctl reload "$LT_SYSTEMD_UNIT" ||
    lt_log "lib.sh: systemctl reload $LT_SYSTEMD_UNIT failed"
  # kvmtune's own state: it only exists because of our VMs when it was not there before.
  # What is left in it is evidence of a failure: keep a copy with the logs.
  if [ "$LT_STATE_DIR_EXISTED" = 0 ] && [ -d "$LT_STATE_DIR" ]; then
    rm -rf "$LT_LOG_DIR/state-at-teardown"
    mkdir -p "$LT_LOG_DIR" && cp -a "$LT_STATE_DIR" "$LT_LOG_DIR/state-at-teardown"
    rm -rf "$LT_STATE_DIR"
  fi
  # Pools last, when no VM holds pages. Per node first; the global file is their sum.
  for f in "${!LT_POOLS_AT_START[@]}"; do
    [ "$f" = /proc/sys/vm/nr_hugepages ] && continue
    [ "$(cat "$f")" = "${LT_POOLS_AT_START[$f]}" ] || echo "${LT_POOLS_AT_START[$f]}" >"$f"
  done
  f=/proc/sys/vm/nr_hugepages
  [ "$(cat $f)" = "${LT_POOLS_AT_START[$f]}" ] || echo "${LT_POOLS_AT_START[$f]}" >$f
  for f in "${!LT_POOLS_AT_START[@]}"; do
    [ "$(cat "$f")" = "${LT_POOLS_AT_START[$f]}" ] \
      || lt_log "lib.sh: could not restore $f to ${LT_POOLS_AT_START[$f]} (it is $(cat "$f"))"
  done
  return "$status"
}

# ---- domain XML ------------------------------------------------------------------------------

# lt_domain_xml NAME UUID MEMORY_MIB hugepages|none [EXTRA_XML]
# The smallest domain that exercises every hook event: TCG (there may be no /dev/kvm), no disk
# (SeaBIOS finds nothing to boot and waits), one vCPU pinned to host CPU 1, memory bound to node 0.
# EXTRA_XML goes inside <domain> (e.g. <metadata> or <cpu>).
lt_domain_xml() {
  local name=$1 uuid=$2 mib=$3 backing=$4 extra=${5:-}
  local mb=''
  [ "$backing" = hugepages ] && mb='  <memoryBacking><hugepages/></memoryBacking>'
  cat <<XML
<domain type='qemu'>
  <name>$name</name>
  <uuid>$uuid</uuid>
  <memory unit='MiB'>$mib</memory>
  <currentMemory unit='MiB'>$mib</currentMemory>
$mb
  <vcpu placement='static'>1</vcpu>
  <cputune><vcpupin vcpu='0' cpuset='1'/></cputune>
  <numatune><memory mode='strict' nodeset='0'/></numatune>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='pty'/>
    <console type='pty'/>
    <memballoon model='none'/>
  </devices>
$extra
</domain>
XML
}
