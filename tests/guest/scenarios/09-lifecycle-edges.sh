# topologies: 2node
# Lifecycle edges, each back to the start exactly:
# (a) prepare succeeds, then QEMU fails to start: libvirt calls stopped + `release end failed`.
# (b) release is handed a different XML than prepare (more memory, another node): kvmtune undoes
#     what it did, from its journal, not from that XML.
# (c) a VM without <memoryBacking><hugepages/> changes nothing at any event.
# (d) invoked as libvirt does: /etc/libvirt/hooks/qemu -> kvmtune, argv[0] decides hook mode;
#     also a domain named like an option.
. /tests/lib.sh

save_snapshot /tmp/base

# (a)
mkdom /tmp/a.xml s9-qemu-failed 128 "" "$(strict 1)"
vm_prepare s9-qemu-failed /tmp/a.xml
expect_pool 1 $HP2M 64 "(a) after prepare"
hook_ok s9-qemu-failed stopped end - /tmp/a.xml
hook_ok s9-qemu-failed release end failed /tmp/a.xml
RELEASED_VMS="$RELEASED_VMS s9-qemu-failed"
expect_snapshot /tmp/base "(a) after release end failed"

# (b)
mkdom /tmp/b.xml s9-xml-changed 128 "" "$(strict 1)"
mkdom /tmp/b2.xml s9-xml-changed 512 "" "$(strict 0)"
vm_start s9-xml-changed /tmp/b.xml 1:$HP2M:64
expect_pool 1 $HP2M 64 "(b) running"
vm_stop s9-xml-changed /tmp/b2.xml
expect_snapshot /tmp/base "(b) after a release handed another XML"

# (c)
mkdom /tmp/c.xml s9-no-hugepages 256 "" "$(strict 1)"
sed -i '/<memoryBacking>/,/<\/memoryBacking>/d' /tmp/c.xml
grep -q "<hugepages" /tmp/c.xml && fail "harness: could not strip memoryBacking"
vm_start s9-no-hugepages /tmp/c.xml
expect_snapshot /tmp/base "(c) running without hugepages"
vm_stop s9-no-hugepages /tmp/c.xml
expect_snapshot /tmp/base "(c) released"

# (d)
mkdir -p /etc/libvirt/hooks
ln -sf "$KT" /etc/libvirt/hooks/qemu
mkdom /tmp/d.xml --help 64 "" "$(strict 1)"
for ev in "prepare begin -" "start begin -"; do
  /etc/libvirt/hooks/qemu --help $ev < /tmp/d.xml > /tmp/d.out 2> /tmp/d.err
  rc=$?; echo "\$ /etc/libvirt/hooks/qemu --help $ev -> exit $rc"; sed 's/^/  /' /tmp/d.err /tmp/d.out
  [ $rc = 0 ] || fail "(d) hooks/qemu --help $ev exited $rc: $(head -1 /tmp/d.err)"
  [ -s /tmp/d.out ] && fail "(d) hooks/qemu --help $ev wrote to stdout: $(head -1 /tmp/d.out)"
done
expect_pool 1 $HP2M 32 "(d) after prepare through hooks/qemu"
qemu_alloc --help 1 $HP2M 32
for ev in "started begin -" "stopped end -" "release end destroyed"; do
  [ "$ev" = "stopped end -" ] && qemu_exit --help
  /etc/libvirt/hooks/qemu --help $ev < /tmp/d.xml > /tmp/d.out 2> /tmp/d.err
  rc=$?; echo "\$ /etc/libvirt/hooks/qemu --help $ev -> exit $rc"; sed 's/^/  /' /tmp/d.err /tmp/d.out
  [ $rc = 0 ] || fail "(d) hooks/qemu --help $ev exited $rc: $(head -1 /tmp/d.err)"
  [ -s /tmp/d.out ] && fail "(d) hooks/qemu --help $ev wrote to stdout: $(head -1 /tmp/d.out)"
done
expect_snapshot /tmp/base "(d) released through hooks/qemu"
rm -rf /etc/libvirt
check_state_clean
