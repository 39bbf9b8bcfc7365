# shellcheck shell=bash
# `kvmtune balance` against the real libvirtd: a TCG guest booting Debian's 6.1 kernel with
# virtio_balloon (tests/libvirt/balloon-guest.sh), and a firmware-only VM without a balloon.
# Sourced by tests/libvirt/run.sh (uses its pass/fail/info/define_from, $BIN, $WORK); run alone
# with LT_ONLY=test_balance_vm.
#
# The host is not really squeezed (other work shares it): the daemon gets policies whose marks
# make this host count as short (low mark 1000 TiB), then as comfortable (high mark 32 MiB).
#   short:       the guest's target and its `actual` fall step by step to min, never below;
#   comfortable: they rise step by step to max, never above;
# every change is one "old → new" line; the VMs it must leave alone are named once; SIGTERM
# ends the daemon with status 0.

BAL_MIN_KIB=$((288 * 1024))
BAL_MAX_KIB=$((448 * 1024))
BAL_MEM_MIB=512

# bal_policy LOW HIGH: a balance policy file for this host (root-owned, not group-writable).
bal_policy() {
  local f=$WORK/balance-$1.toml
  (umask 022 && cat >"$f" <<TOML
[balance]
interval = "1s"
host_free_low = "$1"
host_free_high = "$2"
step = "50%"
min_step = "8MiB"
max_step = "64MiB"
vm_interval = "1s"
guest_free_min = "32MiB"
min_floor = "128MiB"
TOML
  )
  echo "$f"
}

# The balloon's actual size (KiB) and the live target (<currentMemory>, KiB): "ACTUAL TARGET".
bal_sample() {
  local actual target
  actual=$(virsh_ dommemstat "$1" 2>/dev/null | awk '$1 == "actual" {print $2}')
  target=$(virsh_ dumpxml "$1" 2>/dev/null | sed -n "s|.*<currentMemory unit='KiB'>\([0-9]*\)</currentMemory>.*|\1|p")
  echo "${actual:-?} ${target:-?}"
}

# bal_until NAME KIB SECONDS SAMPLES: poll every 0.5 s (samples appended to SAMPLES) until
# actual and target are both KIB, then 3 s more to see that they stay. 1 on timeout.
bal_until() {
  local name=$1 want=$2 secs=$3 samples=$4 end s
  end=$(($(date +%s) + secs))
  while [ "$(date +%s)" -lt "$end" ]; do
    s=$(bal_sample "$name")
    echo "$(date +%s) $s" >>"$samples"
    if [ "$s" = "$want $want" ]; then
      for _ in 1 2 3 4 5 6; do sleep 0.5; echo "$(date +%s) $(bal_sample "$name")" >>"$samples"; done
      return 0
    fi
    sleep 0.5
  done
  return 1
}

# The targets the daemon logged ("balloon A MiB → B MiB"), in KiB, one per line.
bal_logged_targets() {
  sed -n 's/.*: balloon [0-9.]* [KMG]iB → \([0-9.]*\) \([KMG]iB\):.*/\1 \2/p' "$1" |
    awk '{ f = ($2 == "GiB") ? 1048576 : ($2 == "MiB") ? 1024 : 1; printf "%d\n", $1 * f }'
}

# bal_run_daemon POLICY LOG: start `kvmtune balance` in the background; sets BAL_PID.
bal_run_daemon() {
  "$BIN" balance --config "$1" >"$2" 2>&1 &
  BAL_PID=$!
}

# bal_stop_daemon: SIGTERM to the daemon this test started (by PID); sets BAL_RC ("hung" when
# it did not exit within 10 s, then it is killed).
bal_stop_daemon() {
  BAL_RC=hung
  kill -TERM "$BAL_PID" 2>/dev/null
  for _ in $(seq 1 100); do
    if ! kill -0 "$BAL_PID" 2>/dev/null; then wait "$BAL_PID"; BAL_RC=$?; return; fi
    sleep 0.1
  done
  kill -KILL "$BAL_PID" 2>/dev/null
  wait "$BAL_PID" 2>/dev/null
}

# Checks of one phase; prints the reason of the first failure, nothing when fine.
#   bal_check_phase LOG SAMPLES LO HI (every sample and every logged target within LO..HI KiB)
bal_check_phase() {
  local log=$1 samples=$2 lo=$3 hi=$4 bad n
  bad=$(awk -v lo="$lo" -v hi="$hi" '$2 != "?" && ($2 < lo || $2 > hi) {print "actual " $2 " KiB at " $1; exit}
    $3 != "?" && ($3 < lo || $3 > hi) {print "target " $3 " KiB at " $1; exit}' "$samples")
  [ -z "$bad" ] || { echo "sampled $bad, outside $lo..$hi KiB"; return; }
  bad=$(bal_logged_targets "$log" | awk -v lo="$lo" -v hi="$hi" '$1 < lo || $1 > hi {print; exit}')
  [ -z "$bad" ] || { echo "the daemon logged a target of $bad KiB, outside $lo..$hi KiB"; return; }
  n=$(grep -c ' → ' "$log")
  [ "$n" -ge 2 ] || { echo "the daemon logged $n change(s), expected steps: $(paste -sd'|' "$log")"; return; }
  bad=$(grep ' → ' "$log" | grep -v "^balance: VM \"$BAL_NAME\": balloon [0-9.]* [KMG]iB → [0-9.]* [KMG]iB: " | head -1)
  [ -z "$bad" ] || { echo "a change line is not 'VM, old → new, why': $bad"; return; }
  grep -q 'balance: SIGTERM: stopping' "$log" || { echo "no 'SIGTERM: stopping' in its output: $(tail -3 "$log" | paste -sd'|')"; return; }
  [ "$BAL_RC" = 0 ] || echo "the daemon exited $BAL_RC after SIGTERM"
}

# The shrink steps must fall and the grow steps rise: no back and forth within a phase.
bal_monotonic() {  # LOG down|up
  bal_logged_targets "$1" | awk -v dir="$2" 'NR > 1 && ((dir == "down" && $1 >= prev) || (dir == "up" && $1 <= prev)) {print "target " prev " then " $1 " KiB"; exit} {prev = $1}'
}

test_balance_vm() {
  local t=balance-vm name=${LT_DOMAIN_PREFIX}balloon uuid=6b0c7a52-0000-4000-8000-0000000ba101
  local other=${LT_DOMAIN_PREFIX}no-balloon other_uuid=6b0c7a52-0000-4000-8000-0000000ba102
  local boot out d why short comfy t0 tr t1 t2 s guest_short guest_comfy
  BAL_NAME=$name
  # libvirt hands the kernel to QEMU as libvirt-qemu, and relabels it: a world-readable copy.
  # (<cpu mode='maximum'>: TCG boots the kernel about a third faster than with qemu64.)
  boot=$(mktemp -d /tmp/kvmtune-balloon.XXXXXX)
  chmod 755 "$boot"
  if ! out=$("$LT_REPO/tests/libvirt/balloon-guest.sh" "$boot" 2>&1); then
    fail $t "building the guest failed: $(echo "$out" | tail -3 | tr '\n' ' ')"
    rm -rf "$boot"
    return
  fi
  define_from "$name" "<domain type='qemu'>
  <name>$name</name>
  <uuid>$uuid</uuid>
  <metadata>
    <kvmtune:tune xmlns:kvmtune='urn:kvmtune:1'><kvmtune:balloon min='288MiB' max='448MiB'/></kvmtune:tune>
  </metadata>
  <memory unit='MiB'>$BAL_MEM_MIB</memory>
  <currentMemory unit='MiB'>$BAL_MEM_MIB</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <cpu mode='maximum' check='none'/>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$boot/vmlinuz</kernel>
    <initrd>$boot/initrd.gz</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='$boot/console.log'/></serial>
    <memballoon model='virtio'><stats period='1'/></memballoon>
  </devices>
</domain>" || { fail $t "virsh define failed"; rm -rf "$boot"; return; }
  # Asks to be balanced, has no balloon: must be named once, and left alone.
  define_from "$other" "$(lt_domain_xml "$other" "$other_uuid" 128 none \
    "<metadata><kvmtune:tune xmlns:kvmtune='urn:kvmtune:1'><kvmtune:balloon/></kvmtune:tune></metadata>")" \
    || { fail $t "virsh define $other failed"; rm -rf "$boot"; return; }
  for d in "$other" "$name"; do
    out=$(virsh_ start "$d" 2>&1) || { fail $t "virsh start $d failed: $(echo "$out" | tr '\n' ' ')$(calls "$d")"; lt_destroy_quiet "$other"; rm -rf "$boot"; return; }
  done
  t0=$(date +%s)

  # Phase 1, short host. Started while the guest still boots: its driver is not there yet.
  short=$(bal_policy 1000TiB 1001TiB)
  bal_run_daemon "$short" "$WORK/balance-short.log"
  : >"$WORK/samples-short"
  # The boot under TCG takes 15-80 s depending on what else the machine runs: wait for the
  # guest's driver first, then give the balancing itself its own time.
  for _ in $(seq 1 240); do
    virsh_ dommemstat "$name" 2>/dev/null | grep -q '^unused ' && break
    sleep 1
  done
  tr=$(date +%s)
  bal_until "$name" "$BAL_MIN_KIB" 120 "$WORK/samples-short"
  s=$?
  bal_stop_daemon
  t1=$(date +%s)
  guest_short=$(grep '^@@BALLOON MEM' "$boot/console.log" 2>/dev/null | tail -1 | sed 's/^@@BALLOON MEM //')
  why=
  if ! grep -q '^@@BALLOON READY' "$boot/console.log" 2>/dev/null; then
    why="the guest's balloon driver never came up: $(grep '^@@BALLOON' "$boot/console.log" 2>/dev/null | head -3 | paste -sd'|')"
  elif [ "$s" != 0 ]; then
    why="short host: actual/target did not reach min $BAL_MIN_KIB KiB in 120 s after the guest's driver answered ($((tr - t0)) s after start) (last: $(tail -1 "$WORK/samples-short")); daemon said: $(tail -5 "$WORK/balance-short.log" | paste -sd'|')"
  else
    why=$(bal_check_phase "$WORK/balance-short.log" "$WORK/samples-short" "$BAL_MIN_KIB" $((BAL_MEM_MIB * 1024)))
    [ -n "$why" ] && why="short host: $why"
  fi
  if [ -z "$why" ]; then
    # 512 → 448 is the bound (max) correction; from there on each target is lower.
    why=$(grep ' → ' "$WORK/balance-short.log" | tail -n +2 >"$WORK/short-steps"; bal_monotonic "$WORK/short-steps" down)
    [ -n "$why" ] && why="short host, back and forth: $why"
  fi
  if [ -z "$why" ]; then
    [ "$(grep -c "VM \"$other\": not balanced: no balloon device" "$WORK/balance-short.log")" = 1 ] \
      || why="$other (no balloon) was not named exactly once: $(grep -F "\"$other\"" "$WORK/balance-short.log" | paste -sd'|')"
    [ "$(grep -c "VM \"$name\": balanced within 288 MiB .. 448 MiB" "$WORK/balance-short.log")" = 1 ] \
      || why="$name was not introduced exactly once ('balanced within 288 MiB .. 448 MiB'): $(grep -F "\"$name\": [bn]" "$WORK/balance-short.log" | paste -sd'|')"
    [ "$(grep -c "VM \"$name\": not balanced: no balloon statistics" "$WORK/balance-short.log")" -le 1 ] \
      || why="'no balloon statistics' was said more than once for $name"
  fi

  # Phase 2, comfortable host: back up to max, never above.
  if [ -z "$why" ]; then
    comfy=$(bal_policy 16MiB 32MiB)
    bal_run_daemon "$comfy" "$WORK/balance-comfy.log"
    : >"$WORK/samples-comfy"
    bal_until "$name" "$BAL_MAX_KIB" 120 "$WORK/samples-comfy"
    s=$?
    bal_stop_daemon
    guest_comfy=$(grep '^@@BALLOON MEM' "$boot/console.log" 2>/dev/null | tail -1 | sed 's/^@@BALLOON MEM //')
    if [ "$s" != 0 ]; then
      why="comfortable host: actual/target did not reach max $BAL_MAX_KIB KiB in 120 s (last: $(tail -1 "$WORK/samples-comfy")); daemon said: $(tail -5 "$WORK/balance-comfy.log" | paste -sd'|')"
    else
      why=$(bal_check_phase "$WORK/balance-comfy.log" "$WORK/samples-comfy" "$BAL_MIN_KIB" "$BAL_MAX_KIB")
      [ -n "$why" ] && why="comfortable host: $why"
      [ -n "$why" ] || why=$(bal_monotonic "$WORK/balance-comfy.log" up)
    fi
  fi
  t2=$(date +%s)

  # --once --dry-run on the short policy: says what it would do, changes nothing.
  if [ -z "$why" ]; then
    out=$("$BIN" balance --once --dry-run --config "$short" 2>&1)
    if ! grep -q "^balance: would set VM \"$name\": balloon 448 MiB → " <<<"$out"; then
      why="--once --dry-run did not say what it would set: $(echo "$out" | paste -sd'|')"
    elif [ "$(bal_sample "$name")" != "$BAL_MAX_KIB $BAL_MAX_KIB" ]; then
      why="--dry-run changed the balloon: $(bal_sample "$name")"
    fi
  fi

  info $t "guest driver answering $((tr - t0)) s after start; short: $(grep -c ' → ' "$WORK/balance-short.log") changes to min in $((t1 - tr)) s; comfortable: $(grep -c ' → ' "$WORK/balance-comfy.log" 2>/dev/null) changes to max in $((t2 - t1)) s"
  info $t "guest at min: ${guest_short:-?}; at max: ${guest_comfy:-?}"
  info $t "targets (KiB): $(bal_logged_targets "$WORK/balance-short.log" | paste -sd' ') | $(bal_logged_targets "$WORK/balance-comfy.log" 2>/dev/null | paste -sd' ')"
  # Kept with the tier's logs: the daemon's lines, the samples, the guest's console.
  mkdir -p "$LT_LOG_DIR" && cp "$WORK"/balance-*.log "$WORK"/samples-* "$LT_LOG_DIR/" 2>/dev/null
  cp "$boot/console.log" "$LT_LOG_DIR/balloon-console.log" 2>/dev/null
  if [ -n "$why" ]; then
    fail $t "$why"
  else
    pass $t
  fi
  lt_destroy_quiet "$name"
  lt_destroy_quiet "$other"
  rm -rf "$boot"
}
