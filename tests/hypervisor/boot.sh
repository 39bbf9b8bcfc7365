#!/usr/bin/env bash
# Boot the hypervisor image once under QEMU/TCG: 2 NUMA nodes of 2 CPUs, q35 with a vIOMMU
# (intel-iommu, interrupt remapping), one e1000e at 00:03.0 that no host driver needs (the
# scenarios give it to vfio-pci), the tests disk as /dev/vdb.
#   boot.sh IMAGE_DIR TESTS_IMG LOG_DIR
# TESTS_IMG empty: no tests disk. KVMTUNE_HV_WARMUP=1 writes to the image (no -snapshot).
# The guest reboots itself between its two phases (no -no-reboot), and on a kernel panic
# (panic=-1): guest/main.sh decides what a boot runs.
# Writes LOG_DIR/console.log (ttyS0) and LOG_DIR/results.log (ttyS1); exits with QEMU's status,
# 124 when the boot took longer than KVMTUNE_HV_TIMEOUT seconds (default 900).
set -euo pipefail
img=$1
tests=$2
logs=$3
mkdir -p "$logs"
snapshot=(-snapshot)
[ "${KVMTUNE_HV_WARMUP:-0}" = 1 ] && snapshot=()
drives=(-drive "file=$img/disk.img,format=raw,if=virtio,cache=unsafe")
[ -n "$tests" ] && drives+=(-drive "file=$tests,format=raw,if=virtio,readonly=on")
exec timeout --kill-after=10 "${KVMTUNE_HV_TIMEOUT:-900}" qemu-system-x86_64 \
  -accel tcg -cpu max -machine q35,kernel-irqchip=split \
  -device intel-iommu,intremap=on,caching-mode=on \
  -smp 4,sockets=2,cores=2,threads=1 -m 3G \
  -object memory-backend-ram,id=m0,size=1536M -object memory-backend-ram,id=m1,size=1536M \
  -numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1 \
  -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
  -append 'root=LABEL=hvroot rw console=ttyS0 intel_iommu=on quiet systemd.show_status=0 panic=-1' \
  "${snapshot[@]}" "${drives[@]}" \
  -device e1000e,netdev=n1,addr=03.0 -netdev user,id=n1,restrict=on \
  -nographic -nodefaults \
  -serial "file:$logs/console.log" -serial "file:$logs/results.log"
