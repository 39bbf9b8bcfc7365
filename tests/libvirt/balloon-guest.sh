#!/usr/bin/env bash
# Build the boot files of the balloon test guest into DIR: Debian's 6.1 kernel (the guest tier's
# cached copy) and a tiny busybox initramfs whose /init loads virtio_balloon and its transport
# (virtio_ring, virtio, virtio_pci) and then idles. A guest driver is what makes QEMU's balloon
# report statistics (`virsh dommemstat`: unused, available, usable) and follow a new target.
#
#   tests/libvirt/balloon-guest.sh DIR      → DIR/vmlinuz, DIR/initrd.gz
#
# The console says `@@BALLOON READY` once the driver is bound, or `@@BALLOON FAIL reason`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: balloon-guest.sh DIR}
cache=${KVMTUNE_GUEST_CACHE:-/var/cache/kvmtune-tests/guest}

# The guest tier fetches the kernel, its virtio modules and busybox (once, cached).
"$here/../guest/run.sh" --fetch-only >&2

kver=$(cat "$cache/modules/version")
mods=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_balloon)
root=$(mktemp -d /tmp/kvmtune-balloon-root.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,proc,sys,dev,lib/modules}
cp "$cache/busybox" "$root/bin/busybox"
for m in "${mods[@]}"; do
  cp "$cache/modules/kernel/drivers/virtio/$m.ko" "$root/lib/modules/"
done
cat >"$root/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "@@BALLOON BOOT kernel=\$(uname -r) (modules for $kver)"
for m in ${mods[*]}; do
  insmod /lib/modules/\$m.ko || echo "@@BALLOON FAIL insmod \$m"
done
if ls /sys/bus/virtio/drivers/virtio_balloon/ 2>/dev/null | grep -q '^virtio'; then
  echo "@@BALLOON READY \$(grep -E 'MemTotal|MemFree' /proc/meminfo | tr -s ' ' | paste -sd' ')"
else
  echo "@@BALLOON FAIL no virtio device bound to virtio_balloon"
fi
# Idle: the balloon driver does its work in kernel threads. Report memory now and then.
while :; do
  sleep 5
  echo "@@BALLOON MEM \$(grep -E 'MemTotal|MemFree' /proc/meminfo | tr -s ' ' | paste -sd' ')"
done
INIT
chmod 755 "$root/init" "$root/bin/busybox"
mkdir -p "$out"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$out/initrd.gz.tmp"
mv "$out/initrd.gz.tmp" "$out/initrd.gz"
cp "$cache/vmlinuz" "$out/vmlinuz"
