#!/usr/bin/env bash
# Install what every test tier needs on a fresh Debian 12 machine of this project's kind:
# QEMU (for the real-kernel guest and for libvirt), libvirtd, cpio for the guest's initramfs
# (and gcc with a static libc for the one C helper it holds),
# and the Debian kernel + busybox packages the guest boots (downloaded, not installed);
# mmdebstrap and mkfs.ext4 for the Debian 13 hypervisor image (tests/hypervisor/image.sh).
# Idempotent: a second run only checks.
set -euo pipefail

# `tests/deps.sh --libvirt`: only libvirt and QEMU (what scripts/demo.sh needs on a host that
# runs VMs already, such as a hypervisor with no network to install from).
libvirt_only=0
[ "${1:-}" = --libvirt ] && libvirt_only=1
need_apt=()
wanted="qemu-system-x86_64:qemu-system-x86 virsh:libvirt-clients libvirtd:libvirt-daemon-system virtlogd:libvirt-daemon-system"
[ "$libvirt_only" = 1 ] || wanted="$wanted cpio:cpio cc:gcc mmdebstrap:mmdebstrap mkfs.ext4:e2fsprogs"
for cmd in $wanted; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || need_apt+=("${cmd#*:}")
done
# The guest tiers build small static helpers (tests/guest/ksm-pages.c, tests/hypervisor/*.c).
[ "$libvirt_only" = 1 ] || [ -e "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] || need_apt+=(libc6-dev)

if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The image carries qemu-utils from backports, which conflicts with bookworm's qemu-system:
  # pin bookworm's qemu-utils in the same transaction.
  qemu_utils_version=$(apt-cache madison qemu-utils | awk '/bookworm\/main/{print $3; exit}')
  pin=()
  [ -n "$qemu_utils_version" ] && pin=("qemu-utils=${qemu_utils_version}")
  apt-get install -y -qq --no-install-recommends --allow-downgrades \
    libvirt-daemon-system libvirt-clients qemu-system-x86 "${pin[@]}" \
    $([ "$libvirt_only" = 1 ] || echo cpio gcc libc6-dev mmdebstrap e2fsprogs) >/dev/null
fi
echo "deps: qemu $(qemu-system-x86_64 --version | head -1 | awk '{print $4}'), libvirt $(libvirtd --version | awk '{print $3}')"
