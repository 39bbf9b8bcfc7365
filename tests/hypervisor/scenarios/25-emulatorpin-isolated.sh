# timeout: 120
# libvirtd is confined with system.slice while VMs are isolated: it must still place a VM whose
# emulator is pinned to its own isolated CPU (emulatorpin 3, vCPU on 3), where its own cpuset
# does not reach. libvirt sets those CPUs only once QEMU is in its machine.slice scope (seen on
# libvirt 11.3): the VM starts, every QEMU thread runs on CPU 3, no host task does. Partitions
# cannot hold such a VM (a vCPU's partition would take the emulator's only CPU): `auto` takes
# the systemd method and says why.
. /hv/guest/lib.sh
save_state /tmp/base
define hv-emu 25 vcpupin=3 emulatorpin=3 'tune=<kvmtune:isolate cpus="vcpus"/>'
start hv-emu
# A partition of CPU 3 would take the emulator's only CPU: auto takes the systemd method.
kvmtune status > /tmp/status.out 2>&1
grep -q "method chosen: auto: systemd runs on cgroup v2 (no partition: isolated partitions cannot hold VM 'hv-emu''s isolated CPUs: its emulator is pinned to isolated CPUs 3" /tmp/status.out \
  || fail "status does not say why partitions were not used: $(tr '\n' ';' < /tmp/status.out)"
pid=$(qemu_pid hv-emu)
for t in /proc/$pid/task/*; do
  cpus=$(awk '/^Cpus_allowed_list:/{print $2}' "$t/status")
  note "QEMU thread '$(cat "$t/comm")': CPUs $cpus"
  [ "$cpus" = 3 ] || fail "QEMU thread '$(cat "$t/comm")' may run on CPUs $cpus, not only on 3"
done
left=$(tasks_on_cpu 3)
[ -z "$left" ] || { echo "$left"; fail "host tasks may run on CPU 3: $(echo "$left" | awk '{print $2}' | sort -u | tr '\n' ' ')"; }
stop hv-emu
expect_state /tmp/base "after the VM stopped"
