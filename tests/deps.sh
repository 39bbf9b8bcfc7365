#!/usr/bin/env bash
# Install what every test tier needs on a fresh Debian 12 machine of this project's kind:
# QEMU (for the real-kernel guest and for libvirt), libvirtd, cpio for the guest's initramfs
# (and gcc with a static libc for the one C helper it holds),
# and the Debian kernel + busybox packages the guest boots (downloaded, not installed).
# Idempotent: a second run only checks.
set -euo pipefail

need_apt=()
for cmd in qemu-system-x86_64:qemu-system-x86 virsh:libvirt-clients libvirtd:libvirt-daemon-system \
           cpio:cpio virtlogd:libvirt-daemon-system cc:gcc; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || need_apt+=("${cmd#*:}")
done
# The guest tier builds a small static helper (tests/guest/ksm-pages.c).
[ -e "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] || need_apt+=(libc6-dev)

if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The image carries qemu-utils from backports, which conflicts with bookworm's qemu-system:
  # pin bookworm's qemu-utils in the same transaction.
  qemu_utils_version=$(apt-cache madison qemu-utils | awk '/bookworm\/main/{print $3; exit}')
  apt-get install -y -qq --no-install-recommends --allow-downgrades \
    libvirt-daemon-system libvirt-clients qemu-system-x86 "qemu-utils=${qemu_utils_version}" \
    cpio gcc libc6-dev >/dev/null
fi
echo "deps: qemu $(qemu-system-x86_64 --version | head -1 | awk '{print $4}'), libvirt $(libvirtd --version | awk '{print $3}')"
