# shellcheck shell=bash
# Issue 6, sourced by tests/libvirt/run.sh (after lt_setup: the host lock is held, pools are
# restored at teardown): `kvmtune run` around the real QEMU under TCG, and the emulator mode
# through the real libvirtd.
#
# Uses run.sh's helpers: BIN, WORK, pass/fail/info, pool, PAGE_KB, journal_for, define_from,
# lt_domain_xml, calls.

RUN_NAME=${LT_DOMAIN_PREFIX}run
RUN_MIB=64
# The smallest QEMU that maps hugepage-backed RAM and idles: the empty machine, with its RAM
# from /dev/hugepages (preallocated, so the pages must be in the pool when QEMU starts).
run_qemu_args() {
  echo qemu-system-x86_64 -machine none,memory-backend=ram -m $RUN_MIB \
    -object memory-backend-file,id=ram,size=${RUN_MIB}M,mem-path=/dev/hugepages,share=on,prealloc=on \
    -nodefaults -display none -monitor none -serial none "$@"
}

# Start `kvmtune run [OPTIONS]` in the background; sets RUN_PID (the wrapper) and QEMU_PID once
# the started step ran (the ledger shows the VM running). Sets REASON and returns 1 otherwise.
run_start() {
  local i
  # shellcheck disable=SC2046 # word splitting of the fixed argument list is wanted
  "$BIN" run --name "$RUN_NAME" "$@" -- $(run_qemu_args) </dev/null >"$WORK/run.log" 2>&1 &
  RUN_PID=$!
  QEMU_PID=
  for i in $(seq 1 150); do
    if ! kill -0 "$RUN_PID" 2>/dev/null; then
      wait "$RUN_PID"
      REASON="kvmtune run exited ($?) before QEMU was up: $(tr '\n' ' ' <"$WORK/run.log")"
      return 1
    fi
    QEMU_PID=$(pgrep -P "$RUN_PID" | head -1)
    # Ours is the only VM in the ledger during these tests.
    if [ -n "$QEMU_PID" ] && grep -qs "\"$RUN_NAME\"" "$LT_STATE_DIR/ledger.json" \
      && grep -qs '"phase": "running"' "$LT_STATE_DIR/ledger.json"; then
      return 0
    fi
    sleep 0.1
  done
  REASON="QEMU under kvmtune run was not up and started after 15 s: $(tr '\n' ' ' <"$WORK/run.log")"
  kill -TERM "$RUN_PID" 2>/dev/null
  wait "$RUN_PID" 2>/dev/null
  return 1
}

# Wait (up to 10 s) until QEMU PID catches SIGTERM: before, during its set-up (preallocating
# RAM), SIGTERM's default action ends it, and kvmtune run rightly exits 143.
qemu_catches_term() {
  local i cgt
  for i in $(seq 1 100); do
    cgt=$(awk '/^SigCgt:/{print $2}' "/proc/$1/status" 2>/dev/null)
    [ -n "$cgt" ] && (((16#$cgt >> 14) & 1)) && return 0
    sleep 0.1
  done
  return 1
}

# Bytes of 2 MiB-page mappings of a process, from its smaps.
huge_mapped_kib() {
  awk -v ps="$PAGE_KB" '/^Size:/{s=$2} /^KernelPageSize:/{if ($2 == ps) t += s} END {print t + 0}' "/proc/$1/smaps"
}

# kvmtune run of a hugepage-backed QEMU: the pool grows before QEMU starts (its preallocation
# would fail otherwise), QEMU maps its RAM in hugepages, kill -TERM on the wrapper reaches QEMU,
# QEMU's exit status is kvmtune's, and the pool comes back exactly.
test_run_hugepage_qemu() {
  local t=run-hugepage-qemu nr0 free0 need expect nr1 mapped rc nr2 left
  nr0=$(pool) free0=$(pool free_hugepages)
  need=$((RUN_MIB * 1024 / PAGE_KB))
  expect=$((nr0 + (need > free0 ? need - free0 : 0)))
  REASON=
  run_start || { fail $t "$REASON"; return; }
  nr1=$(pool)
  mapped=$(huge_mapped_kib "$QEMU_PID")
  qemu_catches_term "$QEMU_PID" || info $t "QEMU $QEMU_PID does not catch SIGTERM after 10 s"
  kill -TERM "$RUN_PID"
  wait "$RUN_PID"
  rc=$?
  nr2=$(pool)
  left=$(journal_for "$RUN_NAME" "$RUN_NAME")
  info $t "node0 ${PAGE_KB} kB pool $nr0 -> $nr1 -> $nr2; QEMU mapped $mapped KiB in hugepages; exit $rc"
  if [ "$nr1" != "$expect" ]; then
    fail $t "pool while QEMU runs is $nr1, expected $expect (start $nr0, free $free0, QEMU needs $need)"
  elif [ "$mapped" -lt $((RUN_MIB * 1024)) ]; then
    fail $t "QEMU (pid $QEMU_PID) maps $mapped KiB in ${PAGE_KB} kB pages, not its $RUN_MIB MiB"
  elif kill -0 "$QEMU_PID" 2>/dev/null; then
    fail $t "QEMU (pid $QEMU_PID) still runs after kill -TERM on kvmtune run ended"
  elif [ "$rc" != 0 ]; then
    fail $t "kvmtune run exited $rc after kill -TERM (QEMU exits 0 on SIGTERM): $(tr '\n' ' ' <"$WORK/run.log")"
  elif ! grep -q 'terminating on signal 15' "$WORK/run.log"; then
    fail $t "QEMU did not get the SIGTERM: $(tr '\n' ' ' <"$WORK/run.log")"
  elif [ "$nr2" != "$nr0" ]; then
    fail $t "pool after QEMU ended is $nr2, expected the start value $nr0"
  elif [ -n "$left" ]; then
    fail $t "$LT_STATE_DIR still holds state for $RUN_NAME: $left"
  else
    pass $t
  fi
}

# QEMU's own exit status passes through: a QEMU that refuses its arguments (after kvmtune
# prepared) exits 1, a QEMU killed by SIGKILL gives 137; the pool is restored both times.
test_run_exit_status() {
  local t=run-exit-status nr0 rc why=()
  nr0=$(pool)
  # shellcheck disable=SC2046
  "$BIN" run --name "$RUN_NAME" -- $(run_qemu_args -device no-such-device) </dev/null >"$WORK/run-bad.log" 2>&1
  rc=$?
  [ "$rc" = 1 ] || why+=("a QEMU refusing -device no-such-device: kvmtune run exited $rc, not 1 ($(tr '\n' ' ' <"$WORK/run-bad.log"))")
  [ "$(pool)" = "$nr0" ] || why+=("pool after the refused QEMU is $(pool), not $nr0")
  REASON=
  if run_start; then
    kill -KILL "$QEMU_PID"
    wait "$RUN_PID"
    rc=$?
    [ "$rc" = 137 ] || why+=("QEMU killed by SIGKILL: kvmtune run exited $rc, not 137")
    [ "$(pool)" = "$nr0" ] || why+=("pool after QEMU was killed is $(pool), not $nr0")
  else
    why+=("$REASON")
  fi
  [ -z "$(journal_for "$RUN_NAME" "$RUN_NAME")" ] || why+=("$LT_STATE_DIR still holds state for $RUN_NAME")
  if [ ${#why[@]} = 0 ]; then pass $t; else fail $t "$(printf '%s; ' "${why[@]}")"; fi
}

# kill -9 on the wrapper: QEMU is told to stop (parent-death signal), the pool stays held until
# `kvmtune recover` releases it from the journal and the ledger.
test_run_wrapper_killed() {
  local t=run-wrapper-killed nr0 free0 need expect nr1 i out
  nr0=$(pool) free0=$(pool free_hugepages)
  need=$((RUN_MIB * 1024 / PAGE_KB))
  expect=$((nr0 + (need > free0 ? need - free0 : 0)))
  REASON=
  run_start || { fail $t "$REASON"; return; }
  kill -KILL "$RUN_PID"
  wait "$RUN_PID" 2>/dev/null
  for i in $(seq 1 100); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
  nr1=$(pool)
  if kill -0 "$QEMU_PID" 2>/dev/null; then
    fail $t "QEMU (pid $QEMU_PID) still runs 10 s after kvmtune run was killed"
    kill -KILL "$QEMU_PID"
    "$BIN" recover "$RUN_NAME" >/dev/null 2>&1
    return
  fi
  out=$("$BIN" recover 2>&1)
  info $t "pool $nr0 -> $nr1 after the kill -> $(pool) after recover; recover said: $out"
  if [ "$nr1" != "$expect" ]; then
    fail $t "after the kill, before recover, the pool is $nr1, not the $expect the VM holds"
  elif ! grep -qF "released \"$RUN_NAME\"" <<<"$out"; then
    fail $t "kvmtune recover did not release $RUN_NAME: $out"
  elif [ "$(pool)" != "$nr0" ]; then
    fail $t "pool after recover is $(pool), expected $nr0"
  elif [ -n "$(journal_for "$RUN_NAME" "$RUN_NAME")" ]; then
    fail $t "$LT_STATE_DIR still holds state for $RUN_NAME after recover"
  else
    pass $t
  fi
}

# kvmtune run --isolate: while QEMU runs, host tasks (kvmtune run itself included) are confined
# to the housekeeping CPU and QEMU runs on the isolated one, outside the housekeeping cpuset,
# though the sweep of host tasks runs again at started; after, the host is as before.
test_run_isolated() {
  local t=run-isolated why v q rc
  if lt_policy_is_foreign; then
    info $t "running under the host's own policy $LT_POLICY"
  else
    iso_policy '[cpus]' || { fail $t "$REASON"; return; }
  fi
  REASON=
  iso_snapshot "$WORK/run-iso-before"
  run_start --isolate "$ISO_CPUS" || { fail $t "$REASON"; return; }
  # kvmtune run joins the housekeeping cpuset right after the started step.
  for _ in $(seq 1 50); do [ "$(cat "/proc/$RUN_PID/cpuset" 2>/dev/null)" = /kvmtune ] && break; sleep 0.1; done
  iso_snapshot "$WORK/run-iso-running"
  # QEMU is the VM: on the isolated CPU in the root cpuset, every thread of it.
  v=$(iso_violations "$WORK/run-iso-running" | grep -vF "(pid $QEMU_PID)")
  q=$(awk -v p="$QEMU_PID" -v cpus="$ISO_CPUS" '$1 == "T" && $3 == p && ($5 != cpus || $6 != "/") {
        printf "QEMU thread %s (%s) on CPUs %s in cpuset %s; ", $2, $8, $5, $6 }' "$WORK/run-iso-running")
  why=$(iso_status_check)
  qemu_catches_term "$QEMU_PID" || info $t "QEMU $QEMU_PID does not catch SIGTERM after 10 s"
  kill -TERM "$RUN_PID"
  wait "$RUN_PID"
  rc=$?
  iso_snapshot "$WORK/run-iso-after"
  if [ -n "$v" ]; then
    fail $t "while kvmtune run isolates CPU $ISO_CPUS: $(echo "$v" | head -8 | paste -sd';')"
  elif [ -n "$q" ] || ! grep -q "^T [0-9:]* $QEMU_PID u" "$WORK/run-iso-running"; then
    fail $t "QEMU (pid $QEMU_PID) should run on CPU $ISO_CPUS in the root cpuset: ${q:-not found}"
  elif [ -n "$why" ]; then
    fail $t "$why"
  elif [ "$rc" != 0 ]; then
    fail $t "kvmtune run exited $rc after kill -TERM: $(tr '\n' ' ' <"$WORK/run.log")"
  elif why=$(findings iso_restored_check "$WORK/run-iso-before" "$WORK/run-iso-after") && [ -n "$why" ]; then
    fail $t "after QEMU ended: $why"
  else
    pass $t
  fi
}

# ---- emulator mode ---------------------------------------------------------------------------

EMU=$LT_BIN_DIR/qemu-system-x86_64

emu_install() {
  [ -L "$EMU" ] && return 0
  ln -s "$LT_BIN_COPY" "$EMU" || return 1
  LT_CREATED+=("$EMU")
}

# Milliseconds for N runs of PROGRAM -version.
version_ms() {
  local n=$1 start end
  shift
  start=$(date +%s%N)
  for _ in $(seq 1 "$n"); do "$@" -version >/dev/null 2>&1; done
  end=$(date +%s%N)
  echo $(((end - start) / 1000000))
}

# libvirt probes the emulator's capabilities (QEMU with -qmp, -machine none, -daemonize): through
# kvmtune they are the real QEMU's, path aside; -version is the real QEMU's too.
test_emulator_probe() {
  local t=emulator-probe rc out ours real
  emu_install || { fail $t "cannot install $EMU"; return; }
  virsh_ domcapabilities --emulatorbin "$EMU" --virttype qemu >"$WORK/caps-emu-raw.xml" 2>&1
  rc=$?
  out=$(cat "$WORK/caps-emu-raw.xml")
  grep -v '<path>' "$WORK/caps-emu-raw.xml" >"$WORK/caps-emu.xml"
  virsh_ domcapabilities --emulatorbin /usr/bin/qemu-system-x86_64 --virttype qemu 2>&1 | grep -v '<path>' >"$WORK/caps-real.xml"
  ours=$(version_ms 20 "$EMU") real=$(version_ms 20 /usr/bin/qemu-system-x86_64)
  info $t "20 x -version: $ours ms through kvmtune, $real ms direct"
  if [ $rc != 0 ]; then
    fail $t "virsh domcapabilities --emulatorbin $EMU failed: $(echo "$out" | tr '\n' ' ')"
  elif ! grep -qF "<path>$EMU</path>" <<<"$out"; then
    fail $t "domcapabilities does not name $EMU: $(echo "$out" | head -5 | tr '\n' ' ')"
  elif ! cmp -s "$WORK/caps-emu.xml" "$WORK/caps-real.xml"; then
    fail $t "domcapabilities through kvmtune differ from the real QEMU's: $(diff "$WORK/caps-real.xml" "$WORK/caps-emu.xml" | head -6 | tr '\n' ' ')"
  elif [ "$("$EMU" -version)" != "$(/usr/bin/qemu-system-x86_64 -version)" ]; then
    fail $t "$EMU -version differs from the real QEMU's"
  else
    pass $t
  fi
}

# The memory policy of a QEMU process, as its numa_maps shows it for its own executable's
# mapping (a mapping without a policy of its own shows the process's).
numa_policy() { head -1 "/proc/$1/numa_maps" | cut -d' ' -f2; }

# A VM whose <emulator> is kvmtune starts; its QEMU is the real one (exec'd in place) and runs
# with the VM's memory policy (bind:0, from <numatune> strict nodeset 0), where the same VM with
# the plain emulator has the default policy; the hook still reserves and releases its pages.
test_emulator_vm() {
  local t=emulator-vm name=${LT_DOMAIN_PREFIX}emu uuid=6b0c7a52-0000-4000-8000-000000000016
  local plain=${LT_DOMAIN_PREFIX}emu-plain plain_uuid=6b0c7a52-0000-4000-8000-000000000017
  local out pid exe policy base nr0 nr1
  emu_install || { fail $t "cannot install $EMU"; return; }
  define_from "$name" "$(lt_domain_xml "$name" "$uuid" 128 hugepages | sed "s#<emulator>.*</emulator>#<emulator>$EMU</emulator>#")" \
    || { fail $t "virsh define with <emulator>$EMU</emulator> failed"; return; }
  define_from "$plain" "$(lt_domain_xml "$plain" "$plain_uuid" 128 none)" || { fail $t "virsh define $plain failed"; return; }
  out=$(virsh_ start "$plain" 2>&1) || { fail $t "virsh start $plain failed: $(echo "$out" | tr '\n' ' ')"; return; }
  base=$(numa_policy "$(cat "/run/libvirt/qemu/$plain.pid")")
  virsh_ destroy "$plain" >/dev/null 2>&1
  nr0=$(pool)
  if ! out=$(virsh_ start "$name" 2>&1); then
    fail $t "virsh start failed: $(echo "$out" | tr '\n' ' ')$(calls "$name")"
    return
  fi
  pid=$(cat "/run/libvirt/qemu/$name.pid")
  exe=$(readlink "/proc/$pid/exe")
  policy=$(numa_policy "$pid")
  nr1=$(pool)
  virsh_ destroy "$name" >/dev/null 2>&1
  info $t "QEMU $pid is $exe, memory policy $policy (the plain emulator's: $base); pool $nr0 -> $nr1 -> $(pool)"
  if [ "$exe" != /usr/bin/qemu-system-x86_64 ]; then
    fail $t "the VM's QEMU process runs $exe, not the real QEMU"
  elif [ "$policy" != bind:0 ]; then
    fail $t "QEMU's memory policy is '$policy', not bind:0 ($(head -3 "/proc/$pid/numa_maps" 2>/dev/null | tr '\n' ' '))"
  elif [ "$base" = bind:0 ]; then
    fail $t "the plain emulator's QEMU has bind:0 too: the policy does not show kvmtune's work"
  elif [ "$nr1" -lt $((128 * 1024 / PAGE_KB)) ]; then
    fail $t "the pool holds $nr1 pages while the VM runs, fewer than its 128 MiB$(calls "$name")"
  elif [ "$(pool)" != "$nr0" ]; then
    fail $t "the pool is $(pool) after destroy, not $nr0$(calls "$name")"
  else
    pass $t
  fi
}
