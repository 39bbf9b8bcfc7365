#!/usr/bin/env bash
# Build (or find in the cache) the Debian 13 hypervisor image the hypervisor tier boots:
# systemd as PID 1 on cgroup v2, kernel 6.12, libvirt 11, QEMU 10, irqbalance and
# node_exporter as Debian ships them. Everything comes from Debian's packages (mmdebstrap).
#
# Usage: tests/hypervisor/image.sh        prints the cache directory holding
#                                          disk.img (raw, sparse), vmlinuz, initrd.img
# Environment:
#   KVMTUNE_HV_CACHE   where images are kept (default /var/cache/kvmtune-tests/hypervisor);
#                      one subdirectory per key (a hash of the package list and this script)
#   KVMTUNE_HV_MIRROR  Debian mirror (default: the one apt uses here, else deb.debian.org)
#
# The cache key covers the package list and this file, so a change to either builds a new
# image; older images are removed once the new one is complete.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${KVMTUNE_HV_CACHE:-/var/cache/kvmtune-tests/hypervisor}
suite=trixie

# What an operator's hypervisor has, plus the few tools the scenarios use. minbase skips
# Recommends, so every package is named.
packages=(
  systemd-sysv systemd-container dbus udev kmod linux-image-amd64
  libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86 seabios
  irqbalance prometheus-node-exporter
  iproute2 procps pciutils util-linux e2fsprogs curl ca-certificates jq
)

die() { echo "hypervisor image: $*" >&2; exit 1; }

key=$( { printf '%s\n' "${packages[@]}" "$suite"; cat "$0"; } | sha256sum | cut -c1-16)
dir=$cache/$key
if [ -s "$dir/disk.img" ] && [ -s "$dir/vmlinuz" ] && [ -s "$dir/initrd.img" ] && [ -e "$dir/complete" ]; then
  echo "$dir"
  exit 0
fi

for cmd in mmdebstrap mkfs.ext4 qemu-system-x86_64; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (run tests/deps.sh)"
done

mirror=${KVMTUNE_HV_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi

t0=$(date +%s)
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree=$work/tree
echo "hypervisor image: building Debian $suite ($key) from $mirror" >&2

# The guest-side configuration, run inside the tree after the packages are installed.
mmdebstrap --mode=root --variant=minbase --quiet \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook="$here/configure-tree.sh \"\$1\"" \
  "$suite" "$tree" "$mirror" >"$work/mmdebstrap.log" 2>&1 ||
  { tail -30 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed"; }

cp "$tree"/boot/vmlinuz-* "$work/vmlinuz"
cp "$tree"/boot/initrd.img-* "$work/initrd.img"
mkfs.ext4 -q -F -L hvroot -d "$tree" "$work/disk.img" 4G >"$work/mkfs.log" 2>&1 ||
  { cat "$work/mkfs.log" >&2; die "mkfs.ext4 -d failed"; }
rm -rf "$tree"

# One warm-up boot without -snapshot: libvirt probes QEMU's capabilities on its first start
# (8-13 s under TCG); the cache it writes stays in the image, so test boots skip the probe.
echo "hypervisor image: warm-up boot" >&2
KVMTUNE_HV_WARMUP=1 "$here/boot.sh" "$work" "" "$work/warmup" >&2 ||
  die "the warm-up boot failed (console: $work/warmup/console.log)"

touch "$work/complete"
# Only images of other keys go: a concurrent build of the same key would find ours complete.
for old in "$cache"/*/; do
  [ "${old%/}" = "$dir" ] || [ "${old%/}" = "$work" ] || rm -rf "${old%/}"
done
rm -rf "$dir"
mv "$work" "$dir"
trap - EXIT
echo "hypervisor image: built in $(( $(date +%s) - t0 )) s" >&2
echo "$dir"
