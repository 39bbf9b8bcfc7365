# Before the guest reboots: an isolated, hugepage-backed VM on autostart (checked by
# 81-autostart-after-reboot on boot 2). The host's state without it is kept to compare with.
. /hv/guest/lib.sh
save_state /var/lib/hvtest/before-autostart
domain_xml hv-auto 80 vcpupin=3 emulatorpin=0 huge=64 node=1 'tune=<kvmtune:isolate cpus="vcpus"/>' > /var/lib/hvtest/hv-auto.xml
virsh_ define /var/lib/hvtest/hv-auto.xml >/dev/null || fail "define hv-auto"
virsh_ autostart hv-auto >/dev/null || fail "virsh autostart hv-auto"
# Left defined on purpose (boot 2 starts it): not in DEFINED, so cleanup leaves it.
