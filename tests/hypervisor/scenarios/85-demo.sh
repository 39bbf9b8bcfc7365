# timeout: 300
# The README's first command, `scripts/demo.sh`, run on this hypervisor as an operator would run
# it on their own: with the libvirtd that systemd runs (not one of its own) and the installed
# package, no toolchain and no network. It must end with its "restored exactly" verdict and
# leave libvirtd running, the same process as before.
. /hv/guest/lib.sh
save_state /tmp/base
before=$(systemctl show -p MainPID --value libvirtd.service)
cd /hv/repo || fail "harness: no repo copy on the tests disk"
# Through tee, so that a demo cut short by the scenario's bound still shows how far it got.
bash scripts/demo.sh 2>&1 | tee /tmp/demo.out; rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || fail "scripts/demo.sh exited $rc: $(grep -m1 -iE 'error|verdict|demo.sh:|lib.sh:' /tmp/demo.out)"
grep -q "Verdict: every hugepage pool and every process's CPUs were restored exactly." /tmp/demo.out ||
  fail "scripts/demo.sh gave no 'restored exactly' verdict"
grep -q "systemd's libvirtd.service, left running" /tmp/demo.out || fail "the demo did not use systemd's libvirtd"
after=$(systemctl show -p MainPID --value libvirtd.service)
[ "$after" = "$before" ] && [ "$after" != 0 ] || fail "libvirtd is not the same running process (pid $before -> $after)"
[ ! -e /usr/local/lib/kvmtune-test ] || fail "the demo left /usr/local/lib/kvmtune-test behind"
expect_state /tmp/base "after the demo"
