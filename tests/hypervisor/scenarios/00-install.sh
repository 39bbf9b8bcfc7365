# The package installed as an operator installs it: `apt install ./kvmtune_….deb` on a
# hypervisor whose libvirtd systemd already runs. postinst enables and starts the units and
# reloads libvirtd, so the hook works at once: a hugepage-backed VM started right after gets
# its pages, with no restart of anything. The state of the host before the install is kept
# (/var/lib/hvtest/pristine) for the purge scenario.
. /hv/guest/lib.sh
save_state /var/lib/hvtest/pristine
find /etc /usr/sbin /usr/lib/systemd /usr/libexec /run -xdev \
  -not -path '/run/hvtest*' -not -path '/run/systemd/journal*' -not -path '/run/udev*' \
  -not -path '/run/log/*' -not -path '/run/systemd/units/*' -not -path '/run/user*' \
  -not -path '/run/libvirt/*' -not -path '/run/systemd/propagate*' -not -path '/run/credentials*' \
  2>/dev/null | sort > /var/lib/hvtest/pristine.files
systemctl list-unit-files --no-legend | awk '{print $1, $2}' | sort > /var/lib/hvtest/pristine.units

[ -n "$DEB" ] || fail "harness: no kvmtune .deb on the tests disk"
note "installing $(basename "$DEB")"
# No network in the guest: apt resolves the .deb's dependencies from what is installed.
DEBIAN_FRONTEND=noninteractive apt-get install -y "$DEB" > /tmp/apt.log 2>&1 ||
  { cat /tmp/apt.log; fail "apt install of the .deb failed: $(grep -m1 -E '^E:' /tmp/apt.log)"; }
cat /tmp/apt.log

hook=/etc/libvirt/hooks/qemu.d/kvmtune
[ -L "$hook" ] || fail "the hook $hook is not a symlink"
target=$(readlink "$hook")
note "hook link: $hook -> $target"
case $target in /*) ;; *) fail "the hook link is relative ($target); packages ship absolute links" ;; esac
[ "$(readlink -f "$hook")" = /usr/sbin/kvmtune ] || fail "the hook resolves to $(readlink -f "$hook"), not /usr/sbin/kvmtune"
# systemd 257's own check of the package's units (the package tier runs Debian 12's, with the
# man pages; this image has none, so their Documentation= links are not followed here).
units=$(dpkg -L kvmtune | grep -E '/systemd/system/.*\.service$')
verify=$(systemd-analyze verify --man=no $units 2>&1)
[ -z "$verify" ] || fail "systemd-analyze verify on the package's units: $(echo "$verify" | head -3 | tr '\n' ' ')"
note "systemd-analyze verify: clean ($(echo $units | wc -w) units)"
for unit in kvmtune-recover.service kvmtune-watch.service; do
  [ "$(systemctl is-enabled "$unit")" = enabled ] || fail "$unit is not enabled after install"
done
wait_for 10 "kvmtune-watch.service is not active after install" systemctl is-active --quiet kvmtune-watch.service

# The hook is live without a restart: a hugepage VM gets 32 pages on node 1.
before=$(hp 1 2048 nr_hugepages)
define hv-install 1 huge=64 node=1
start hv-install
now=$(hp 1 2048 nr_hugepages)
note "node 1 2 MiB pool: $before before, $now while the VM runs"
[ "$now" -ge $((before + 32)) ] || fail "libvirtd did not run kvmtune's hook after install: node 1 pool $before -> $now"
kvmtune status | grep -q hv-install || fail "kvmtune status does not list the running VM"
stop hv-install
wait_for 10 "node 1's pool is not back to $before after the VM stopped" pool_is 1 2048 "$before"
