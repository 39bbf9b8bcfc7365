#!/usr/bin/env bash
# mmdebstrap customize hook for the hypervisor image (tests/hypervisor/image.sh): make the
# bare tree boot as a quiet hypervisor under QEMU/TCG that runs the tier's scenarios.
#   configure-tree.sh TREE
set -euo pipefail
tree=$1
[ -d "$tree/etc" ] || { echo "configure-tree: $tree is not a root tree" >&2; exit 1; }

echo hv > "$tree/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 hv\n' > "$tree/etc/hosts"
echo 'LABEL=hvroot / ext4 rw,errors=remount-ro 0 1' > "$tree/etc/fstab"
chroot "$tree" systemd-machine-id-setup >/dev/null
# No password prompt or locale questions at first boot; the root account is for `-serial`
# debugging only (a test boot never logs in).
chroot "$tree" passwd -d root >/dev/null

# Quiet and fast: nothing that wakes up on a timer mid-test, a journal in memory only.
for unit in systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
            e2scrub_reap.service fstrim.timer man-db.timer dpkg-db-backup.timer \
            systemd-tmpfiles-clean.timer; do
  ln -sf /dev/null "$tree/etc/systemd/system/$unit"
done
mkdir -p "$tree/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' > "$tree/etc/systemd/journald.conf.d/volatile.conf"

# -cpu max shows SVM/VMX: kvm_amd would load slowly and libvirt would re-probe QEMU on every
# boot. The guest's VMs run under TCG (type='qemu'), so no kvm module at all.
cat > "$tree/etc/modprobe.d/no-kvm.conf" <<'CONF'
install kvm /bin/false
install kvm_amd /bin/false
install kvm_intel /bin/false
CONF

# The runner: after libvirtd, mount the tests disk (label hvtests) and run its entry point,
# with results on the second serial port; without a tests disk (the image's warm-up boot) make
# libvirt probe QEMU once, so its capabilities cache is in the image, and power off.
install -m 0755 /dev/stdin "$tree/usr/local/sbin/hvtest-runner" <<'RUNNER'
#!/bin/bash
exec >/dev/ttyS1 2>&1
if [ -e /dev/disk/by-label/hvtests ] || udevadm settle -t 10 && [ -e /dev/disk/by-label/hvtests ]; then
  mkdir -p /mnt/tests
  mount -o ro /dev/disk/by-label/hvtests /mnt/tests
  bash /mnt/tests/guest-main.sh
  echo "hvtest-runner: done"
  sync
  systemctl poweroff -ff
else
  virsh -q -c qemu:///system domcapabilities --virttype qemu >/dev/null && echo "hvtest-runner: warm"
  systemctl poweroff
fi
RUNNER
cat > "$tree/etc/systemd/system/hvtest.service" <<'UNIT'
[Unit]
Description=kvmtune hypervisor tier: run the scenarios
After=libvirtd.service virtqemud.service multi-user.target systemd-udev-settle.service
Wants=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/hvtest-runner
StandardInput=null

[Install]
WantedBy=default.target
UNIT
ln -sf /etc/systemd/system/hvtest.service "$tree/etc/systemd/system/default.target.wants/hvtest.service" 2>/dev/null ||
  { mkdir -p "$tree/etc/systemd/system/default.target.wants"; ln -sf /etc/systemd/system/hvtest.service "$tree/etc/systemd/system/default.target.wants/hvtest.service"; }
# hugetlbfs at /dev/hugepages comes from systemd's dev-hugepages.mount; libvirt finds it at start.
