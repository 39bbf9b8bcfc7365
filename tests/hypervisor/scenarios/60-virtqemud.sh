# timeout: 180
# The modular daemons (the default of Fedora and RHEL): libvirtd is stopped with its sockets and
# virtqemud takes over through its own sockets, as `man virtqemud` describes the switch. It
# finds kvmtune's hook in qemu.d when it starts (no reboot, nothing reinstalled): a hugepage VM
# gets its pages, an isolated one its CPU, and `systemctl restart virtqemud` with the VM running
# keeps both (reconnect). Then back to libvirtd; the host as before.
. /hv/guest/lib.sh
command -v virtqemud >/dev/null || fail "Debian 13 ships no virtqemud binary here"
save_state /tmp/base
mono="libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket"
modular="virtqemud.socket virtqemud-ro.socket virtqemud-admin.socket"
back_to_libvirtd() {
  cleanup_domains
  systemctl stop virtqemud.service $modular 2>/dev/null
  systemctl start libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket libvirtd.service
}
trap back_to_libvirtd EXIT
systemctl stop $mono || fail "cannot stop libvirtd"
systemctl start $modular || fail "cannot start virtqemud's sockets"
wait_for 30 "virtqemud does not answer on qemu:///system" virsh_ list --name
systemctl is-active --quiet virtqemud.service || fail "qemu:///system answers, but not from virtqemud"
note "virtqemud $(virtqemud --version | awk '{print $NF}') answers"

define hv-modular 60 vcpupin=3 emulatorpin=0 huge=64 node=1 'tune=<kvmtune:isolate cpus="vcpus"/>'
b1=$(hp 1 2048 nr_hugepages)
start hv-modular
[ "$(hp 1 2048 nr_hugepages)" -ge $((b1 + 32)) ] || fail "virtqemud did not run kvmtune's hook: node 1 pool $b1 -> $(hp 1 2048 nr_hugepages)"
left=$(tasks_on_cpu 3)
[ -z "$left" ] || { echo "$left"; fail "under virtqemud, host tasks may run on CPU 3: $(echo "$left" | awk '{print $2}' | sort -u | tr '\n' ' ')"; }
save_state /tmp/running
pid=$(qemu_pid hv-modular)
systemctl restart virtqemud.service || fail "systemctl restart virtqemud failed"
wait_for 30 "virtqemud did not come back" virsh_ list --name
virsh_ domstate hv-modular | grep -q running || fail "the VM is not running after restarting virtqemud"
[ "$(qemu_pid hv-modular)" = "$pid" ] || fail "QEMU changed pid across the restart"
expect_state /tmp/running "after restarting virtqemud"
stop hv-modular
wait_for 10 "node 1's pool not back after the VM stopped" test "$(hp 1 2048 nr_hugepages)" = "$b1"
back_to_libvirtd
trap - EXIT
wait_for 30 "libvirtd does not answer again" virsh_ list --name
expect_state /tmp/base "back on libvirtd"
