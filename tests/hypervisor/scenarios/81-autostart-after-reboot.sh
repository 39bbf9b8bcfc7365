# boot: 2
# timeout: 180
# After a reboot with a VM on autostart: kvmtune-recover.service ran at boot (before libvirtd)
# and succeeded, libvirtd started the VM through the hook, and the VM came up consistent: its
# pages on node 1, CPU 3 isolated, kvmtune status listing it. Once it stops and is undefined,
# the host is as it was before the VM was defined (boot 1).
. /hv/guest/lib.sh
DEFINED=(hv-auto)
[ "$(systemctl show -p Result --value kvmtune-recover.service)" = success ] ||
  fail "kvmtune-recover.service did not succeed at boot: $(systemctl status kvmtune-recover.service 2>&1 | tail -3 | tr '\n' ' ')"
# After a reboot /run/kvmtune is gone with the state it described: the unit's condition skips it.
# When it does run (state in /run), it must end before libvirtd starts.
if [ "$(systemctl show -p ConditionResult --value kvmtune-recover.service)" = yes ]; then
  rec=$(systemctl show -p ExecMainExitTimestampMonotonic --value kvmtune-recover.service)
  lib=$(systemctl show -p ExecMainStartTimestampMonotonic --value libvirtd.service)
  [ "$rec" -gt 0 ] && [ "$rec" -le "$lib" ] ||
    fail "kvmtune-recover.service (ended at $rec us) did not run before libvirtd (started at $lib us)"
  note "kvmtune-recover.service ran before libvirtd"
else
  note "kvmtune-recover.service skipped at boot: no /run/kvmtune, nothing to recover"
fi
wait_for 60 "the autostart VM is not running after boot" bash -c "virsh -q -c $URI domstate hv-auto | grep -q running"
[ "$(hp 1 2048 nr_hugepages)" -ge 32 ] || fail "the autostarted VM has no pages on node 1 ($(hp 1 2048 nr_hugepages))"
kvmtune status | grep -q '"hv-auto"' || fail "kvmtune status does not list the autostarted VM"
left=$(tasks_on_cpu 3)
[ -z "$left" ] || { echo "$left"; fail "after the reboot, host tasks may run on CPU 3: $(echo "$left" | awk '{print $2}' | sort -u | tr '\n' ' ')"; }
virsh_ autostart --disable hv-auto >/dev/null
stop hv-auto
virsh_ undefine hv-auto >/dev/null
expect_state /var/lib/hvtest/before-autostart "after the autostarted VM stopped"
