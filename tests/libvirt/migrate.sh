# shellcheck shell=bash
# Sourced by tests/libvirt/run.sh: live migration between two real libvirtds on this one
# machine, so the destination's hook gets `migrate begin` with the XML libvirt really sends.
#
# The tier's libvirtd is the source. The destination is a second libvirtd (with its own
# virtlogd) in a mount and UTS namespace of its own: its own /etc/libvirt (kvmtune as its only
# hook, another host_uuid), /run/libvirt, /var/lib/libvirt, /var/log/libvirt and
# /var/cache/libvirt (bind mounts over tempdirs) and hostname — libvirt refuses a migration to
# "the same host" when the host name or UUID match. /sys, /proc, /dev, /run/kvmtune and the
# network are shared, so the destination sees the same CPUs, and QEMU migrates over 127.0.0.1.
# Everything it starts is stopped by pid; its tempdir (and with its processes, the namespace
# and its mounts) goes away at the end.

MIG_DIR=
MIG_URI=
MIG_PORT=49152
MIG_DEST_IDS=0   # domains started on the destination so far: it gives out ids 1, 2, …

mig_virsh() { virsh -q -c "$MIG_URI" "$@"; }

# Start the destination; returns 1 (with REASON) when it does not come up.
mig_setup() {
  MIG_DIR=$(mktemp -d /tmp/kvmtune-dest.XXXXXX)
  mkdir -p "$MIG_DIR"/{etc,run,lib/qemu,log/qemu,cache/qemu}
  chown libvirt-qemu:libvirt-qemu "$MIG_DIR/lib/qemu" 2>/dev/null || true
  # The daemons' configuration files only: not the source's domains, networks or pools
  # (the destination would define them too, and start autostarted networks a second time).
  find /etc/libvirt -maxdepth 1 -type f -exec cp -a {} "$MIG_DIR/etc/" \;
  mkdir -p "$MIG_DIR/etc/qemu" "$MIG_DIR/etc/hooks/qemu.d"
  if [ "$CAPTURE" = 1 ]; then
    # Keep what libvirt writes on the destination hook's stdin (a fixture for the unit tests).
    cat >"$MIG_DIR/etc/hooks/qemu.d/kvmtune" <<WRAPPER
#!/bin/bash
f="$MIG_DIR/stdin.\${2:-}.\${3:-}.xml"
cat >"\$f"
exec -a "\$0" "$LT_BIN_COPY" "\$@" <"\$f"
WRAPPER
    chmod 0755 "$MIG_DIR/etc/hooks/qemu.d/kvmtune"
  else
    ln -s "$LT_BIN_COPY" "$MIG_DIR/etc/hooks/qemu.d/kvmtune"
  fi
  printf 'host_uuid = "6b0c7a52-0000-4000-8000-0000000000de"\n' >>"$MIG_DIR/etc/libvirtd.conf"
  # The destination reads its status and config from the namespace's paths, the hook included.
  setsid unshare --mount --uts --propagation private -- bash -c '
    d=$1
    hostname kvmtune-test-destination
    for p in etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt log:/var/log/libvirt cache:/var/cache/libvirt; do
      mount --bind "$d/${p%%:*}" "${p#*:}" || exit 1
    done
    virtlogd -p "$d/virtlogd.pid" &
    for _ in $(seq 1 50); do [ -S /run/libvirt/virtlogd-sock ] && break; sleep 0.1; done
    exec libvirtd -p "$d/libvirtd.pid"
  ' mig "$MIG_DIR" {LT_LOCK_FD}>&- </dev/null >"$LT_LOG_DIR/destination-libvirtd.log" 2>&1 &
  MIG_URI="qemu+unix:///system?socket=$MIG_DIR/run/libvirt-sock"
  for _ in $(seq 1 150); do
    timeout 10 virsh -c "$MIG_URI" version >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  REASON="the destination libvirtd did not answer on $MIG_URI: $(tail -5 "$LT_LOG_DIR/destination-libvirtd.log" | tr '\n' ' ')"
  return 1
}

mig_teardown() {
  local f pid name
  [ -n "$MIG_DIR" ] || return 0
  if [ -S "$MIG_DIR/run/libvirt-sock" ]; then
    for name in $(mig_virsh list --all --name 2>/dev/null); do
      mig_virsh destroy "$name" >/dev/null 2>&1
      mig_virsh undefine "$name" >/dev/null 2>&1
    done
  fi
  for f in libvirtd virtlogd; do
    pid=$(cat "$MIG_DIR/$f.pid" 2>/dev/null) || continue
    [ -n "$pid" ] && lt_stop_pid "destination $f" "$pid"
  done
  [ -d "$MIG_DIR/log/qemu" ] && cp -a "$MIG_DIR/log/qemu/." "$LT_LOG_DIR/" 2>/dev/null
  rm -rf "$MIG_DIR"
  MIG_DIR=
}

# The CPU list a running domain's thread named like PATTERN may run on, on the destination.
mig_thread_cpus() {  # NAME PATTERN
  local pid t
  pid=$(cat "$MIG_DIR/run/qemu/$1.pid" 2>/dev/null) || return 1
  for t in /proc/"$pid"/task/*; do
    if grep -q "$2" "$t/comm" 2>/dev/null; then
      awk '/^Cpus_allowed_list:/{print $2}' "$t/status"
      return 0
    fi
  done
  return 1
}

# A domain with vCPU 0 on CPU 0 (housekeeping here) and the emulator on CPU 1: the wrong way
# round for this host. With remap="on", the destination's hook swaps them.
mig_domain() {  # NAME UUID METADATA
  local xml
  xml=$(lt_domain_xml "$1" "$2" 128 none "$3")
  printf '%s\n' "${xml/<vcpupin vcpu=\'0\' cpuset=\'1\'\/>/<vcpupin vcpu=\'0\' cpuset=\'0\'\/><emulatorpin cpuset=\'1\'\/>}"
}

# Start NAME on the source, not under the id the destination gives out next (both daemons
# name their cgroups qemu-ID-NAME in the same hierarchy), and migrate it live. Sets REASON and
# MIG_OUT (what virsh migrate said) on failure.
mig_migrate() {  # NAME
  local out id
  MIG_OUT=
  out=$(virsh_ start "$1" 2>&1) || { REASON="virsh start failed: $(echo "$out" | tr '\n' ' ')"; return 1; }
  id=$(virsh_ domid "$1")
  if [ "$id" = $((MIG_DEST_IDS + 1)) ]; then
    virsh_ destroy "$1" >/dev/null 2>&1
    out=$(virsh_ start "$1" 2>&1) || { REASON="virsh start failed: $(echo "$out" | tr '\n' ' ')"; return 1; }
  fi
  MIG_PORT=$((MIG_PORT + 1))
  if ! MIG_OUT=$(timeout 120 virsh -q -c "$LT_URI" migrate --live "$1" "$MIG_URI" "tcp://127.0.0.1:$MIG_PORT" 2>&1); then
    REASON="virsh migrate failed: $(echo "$MIG_OUT" | tr '\n' ' ')"
    return 1
  fi
  MIG_DEST_IDS=$((MIG_DEST_IDS + 1))
}

test_migrate_remap() {
  local t=migrate-remap name=${LT_DOMAIN_PREFIX}remap plain=${LT_DOMAIN_PREFIX}noremap
  local want want_vcpu want_emu live vcpu emu thread_cpus plain_xml src_state
  REASON=
  if ! command -v unshare >/dev/null; then
    fail $t "unshare (util-linux) is missing"
    return
  fi
  define_from "$name" "$(mig_domain "$name" 6b0c7a52-0000-4000-8000-00000000000d \
    '<metadata><kvmtune:tune xmlns:kvmtune="urn:kvmtune:1"><kvmtune:migrate remap="on"/></kvmtune:tune></metadata>')" \
    || { fail $t "virsh define failed"; return; }
  define_from "$plain" "$(mig_domain "$plain" 6b0c7a52-0000-4000-8000-00000000000e '')" \
    || { fail $t "virsh define failed"; return; }
  if ! mig_setup; then fail $t "$REASON"; mig_teardown; return; fi
  # What kvmtune fits on the destination (no VM defined there yet): the remap must agree.
  want=$(LIBVIRT_DEFAULT_URI=$MIG_URI "$BIN" suggest --vcpus 1 --memory 128M 2>&1)
  want_vcpu=$(sed -n "s/.*<vcpupin vcpu='0' cpuset='\([^']*\)'.*/\1/p" <<<"$want")
  want_emu=$(sed -n "s/.*<emulatorpin cpuset='\([^']*\)'.*/\1/p" <<<"$want")
  if [ -z "$want_vcpu" ]; then
    fail $t "kvmtune suggest found no placement on this host: $(echo "$want" | tr '\n' ' ')"
    mig_teardown
    return
  fi

  if ! mig_migrate "$name"; then
    fail $t "$REASON$(calls "$name")"
    mig_teardown
    return
  fi
  [ "$CAPTURE" = 1 ] && [ -f "$MIG_DIR/stdin.migrate.begin.xml" ] \
    && cp "$MIG_DIR/stdin.migrate.begin.xml" "$FIXTURES/hook-stdin-remap.migrate.begin.xml"
  live=$(mig_virsh dumpxml "$name")
  vcpu=$(sed -n "s/.*<vcpupin vcpu='0' cpuset='\([^']*\)'.*/\1/p" <<<"$live")
  emu=$(sed -n "s/.*<emulatorpin cpuset='\([^']*\)'.*/\1/p" <<<"$live")
  thread_cpus=$(mig_thread_cpus "$name" '^CPU 0/')
  src_state=$(lt_domain_state "$name")
  mig_virsh destroy "$name" >/dev/null 2>&1

  if ! mig_migrate "$plain"; then
    fail $t "(without remap) $REASON$(calls "$plain")"
    mig_teardown
    return
  fi
  plain_xml=$(mig_virsh dumpxml "$plain")
  mig_virsh destroy "$plain" >/dev/null 2>&1

  # A destination where nothing fits (a VM there holds the one CPU that is not housekeeping):
  # the hook refuses, libvirt refuses the migration, the VM keeps running on the source.
  local blocker=${LT_DOMAIN_PREFIX}blocker refused_rc refused_state refused_out
  lt_domain_xml "$blocker" 6b0c7a52-0000-4000-8000-00000000000f 128 none \
    | sed "s/cpuset='1'/cpuset='$want_vcpu'/" >"$WORK/blocker.xml"
  if ! refused_out=$(mig_virsh create "$WORK/blocker.xml" 2>&1); then
    fail $t "could not start a VM on the destination: $(echo "$refused_out" | tr '\n' ' ')"
    mig_teardown
    return
  fi
  MIG_DEST_IDS=$((MIG_DEST_IDS + 1))
  local t0=$SECONDS
  mig_migrate "$name"
  refused_rc=$?
  local refused_s=$((SECONDS - t0))
  refused_out=$MIG_OUT
  refused_state=$(lt_domain_state "$name")
  lt_destroy_quiet "$name"
  mig_teardown

  info $t "source pins vCPU 0 -> CPU 0, emulator -> 1; destination: vCPU 0 -> $vcpu (thread on $thread_cpus), emulator -> $emu; kvmtune suggest: $want_vcpu / $want_emu"
  if [ "$src_state" != "shut off" ]; then
    fail $t "after the migration the source says '$src_state' for $name"
  elif [ "$vcpu" != "$want_vcpu" ] || [ "$emu" != "$want_emu" ]; then
    fail $t "on the destination vCPU 0 is pinned to '$vcpu' and the emulator to '$emu', expected $want_vcpu and $want_emu (what kvmtune suggest fits)"
  elif [ "$thread_cpus" != "$want_vcpu" ]; then
    fail $t "the destination QEMU's vCPU 0 thread may run on '$thread_cpus', not $want_vcpu"
  elif ! grep -q "<vcpupin vcpu='0' cpuset='0'/>" <<<"$plain_xml" || ! grep -q "<emulatorpin cpuset='1'/>" <<<"$plain_xml"; then
    fail $t "a VM without remap=\"on\" arrived with other pins (the hook must print nothing, and libvirt then keeps its XML): $(grep -E 'vcpupin|emulatorpin' <<<"$plain_xml" | tr -d ' ' | paste -sd' ')"
  elif [ "$refused_rc" = 0 ]; then
    fail $t "the migration to a destination where nothing fits succeeded"
  elif ! grep -q 'kvmtune: .*nothing fits' <<<"$refused_out"; then
    fail $t "the refused migration does not carry kvmtune's reason: $(echo "$refused_out" | tr '\n' ' ')"
  elif [ "$refused_state" != running ]; then
    fail $t "after the refused migration the source says '$refused_state' for $name, not running"
  else
    info $t "refused in ${refused_s} s (start on the source included) where nothing fits: $(grep -o 'kvmtune: .*' <<<"$refused_out" | head -1)"
    pass $t
  fi
}
