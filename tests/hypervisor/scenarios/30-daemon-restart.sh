# timeout: 180
# `systemctl restart libvirtd` while an isolated, hugepage-backed VM runs: libvirtd reconnects
# (the hook's `reconnect`), the VM keeps running with its pages and its isolated CPU, and
# isolation still holds (libvirtd's new process included). After the VM stops: host as before.
. /hv/guest/lib.sh
save_state /tmp/base
define hv-restart 30 vcpupin=3 emulatorpin=0 huge=64 node=1 'tune=<kvmtune:isolate cpus="vcpus"/>'
start hv-restart
pid=$(qemu_pid hv-restart)
save_state /tmp/running
old=$(systemctl show -p MainPID --value libvirtd.service)
systemctl restart libvirtd.service || fail "systemctl restart libvirtd failed"
wait_for 30 "libvirtd did not come back" virsh_ list --name
new=$(systemctl show -p MainPID --value libvirtd.service)
[ "$new" != "$old" ] || fail "libvirtd was not restarted (pid $old)"
virsh_ domstate hv-restart | grep -q running || fail "the VM is not running after the restart: $(virsh_ domstate hv-restart)"
[ "$(qemu_pid hv-restart)" = "$pid" ] || fail "QEMU changed pid across the restart ($pid -> $(qemu_pid hv-restart))"
journalctl -t kvmtune --no-pager | grep -q "reconnect" && note "kvmtune logged the reconnect"
expect_state /tmp/running "after the libvirtd restart, VM still running"
left=$(tasks_on_cpu 3)
[ -z "$left" ] || { echo "$left"; fail "after the restart, host tasks may run on CPU 3: $(echo "$left" | awk '{print $2}' | sort -u | tr '\n' ' ')"; }
stop hv-restart
expect_state /tmp/base "after the VM stopped"
