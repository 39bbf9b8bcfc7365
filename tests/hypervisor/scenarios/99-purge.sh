# boot: 2
# Purge leaves the hypervisor as before the install: no file, unit, runtime drop-in, cgroup,
# pool or IRQ affinity of kvmtune's left.
. /hv/guest/lib.sh
DEBIAN_FRONTEND=noninteractive apt-get purge -y kvmtune > /tmp/purge.log 2>&1 ||
  { cat /tmp/purge.log; fail "apt-get purge kvmtune failed"; }
cat /tmp/purge.log
find /etc /usr/sbin /usr/lib/systemd /usr/libexec /run -xdev \
  -not -path '/run/hvtest*' -not -path '/run/systemd/journal*' -not -path '/run/udev*' \
  -not -path '/run/log/*' -not -path '/run/systemd/units/*' -not -path '/run/user*' \
  -not -path '/run/libvirt/*' -not -path '/run/systemd/propagate*' -not -path '/run/credentials*' \
  2>/dev/null | sort > /tmp/files.now
extra=$(comm -13 /var/lib/hvtest/pristine.files /tmp/files.now | grep -i kvmtune)
[ -z "$extra" ] || fail "purge left files behind: $(echo "$extra" | tr '\n' ' ')"
systemctl list-unit-files --no-legend | awk '{print $1, $2}' | sort > /tmp/units.now
diff /var/lib/hvtest/pristine.units /tmp/units.now || fail "unit files differ from before the install: $(diff /var/lib/hvtest/pristine.units /tmp/units.now | grep '^[<>]' | tr '\n' ' ')"
expect_state /var/lib/hvtest/pristine "after purge"
