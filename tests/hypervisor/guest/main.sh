#!/bin/bash
# Inside the hypervisor guest (run by hvtest.service after libvirtd, output on ttyS1): run the
# scenarios of this boot in name order, one line each:
#   PASS hypervisor/NAME
#   FAIL hypervisor/NAME: reason      (followed by the scenario's log, each line "| ...")
# Scenarios with a `# boot: 2` header run after a reboot of the guest (the overlay disk keeps
# what boot 1 left), the others on boot 1. Each runs under `timeout`, from a copy of the tests
# disk at /hv, as root, with its log in /var/log/hvtest/NAME.log.
set -u
src=/mnt/tests
state=/var/lib/hvtest
mkdir -p "$state" /var/log/hvtest
# Two phases (boot: 1 and boot: 2 scenarios), each on its own boot. A kernel panic under TCG
# (seen once in a dozen boots: an int3 left by text patching) reboots the guest (panic=-1):
# a phase that crashed before its first scenario is run again; one that crashed in the middle
# is reported and the guest powers off (its scenarios then "did not report").
boots=$(( $(cat "$state/boots" 2>/dev/null || echo 0) + 1 ))
echo "$boots" > "$state/boots"
boot=$(( $(cat "$state/phases-done" 2>/dev/null || echo 0) + 1 ))
sync
if [ -e "$state/started-$boot" ]; then
  echo "main: boot $boots: phase $boot was cut short by a crash or an unplanned reboot (see the console log); powering off"
  exit 0
fi
if [ "$boots" -gt 4 ]; then
  echo "main: boot $boots: the guest keeps crashing before the scenarios (see the console log); powering off"
  exit 0
fi
[ "$boots" -gt "$boot" ] && echo "main: boot $boots: the guest rebooted before phase $boot began (a crash at boot?); running it now"
[ -d /hv ] || cp -r "$src" /hv
[ -e /hv/verbose ] && HV_VERBOSE=1
echo "main: boot $boot, kernel $(uname -r), systemd $(systemctl --version | awk 'NR==1{print $2}'), libvirt $(libvirtd --version | awk '{print $3}')"

scenario_boot() { sed -n 's/^# boot:[[:space:]]*//p' "$1" | head -1; }
timeout_of() { local t; t=$(sed -n 's/^# timeout:[[:space:]]*//p' "$1" | head -1); echo "${t:-120}"; }

for s in /hv/scenarios/*.sh; do
  name=$(basename "$s" .sh)
  want=$(scenario_boot "$s"); want=${want:-1}
  [ "$want" = "$boot" ] || continue
  if [ -n "${HV_ONLY:-}" ] && ! grep -qw "$name" <<<"$HV_ONLY"; then continue; fi
  [ -e "$state/started-$boot" ] || { touch "$state/started-$boot"; sync; }
  log=/var/log/hvtest/$name.log
  rm -f /run/hvtest-reason
  t0=$(date +%s.%N)
  HV_NAME=$name timeout -k 5 "$(timeout_of "$s")" bash "$s" >"$log" 2>&1
  rc=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
  if [ "$rc" = 0 ]; then
    echo "PASS hypervisor/$name (${secs} s)"
    [ "${HV_VERBOSE:-0}" = 1 ] && sed 's/^/| /' "$log"
  else
    reason=$(cat /run/hvtest-reason 2>/dev/null || true)
    [ "$rc" = 124 ] && reason="timed out after $(timeout_of "$s") s${reason:+ ($reason)}"
    echo "FAIL hypervisor/$name: ${reason:-exit $rc} (${secs} s)"
    sed 's/^/| /' "$log"
  fi
done

echo "$boot" > "$state/phases-done"
sync
if [ "$boot" = 1 ] && grep -lq '^# boot: 2' /hv/scenarios/*.sh; then
  echo "main: rebooting for the boot-2 scenarios"
  sync
  systemctl reboot
  # hvtest-runner must not power off while the reboot is under way.
  sleep infinity
fi
