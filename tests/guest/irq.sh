# Helpers of the IRQ affinity scenarios (busybox sh). Source after lib.sh and isolation.sh:
#   . /tests/lib.sh; . /tests/isolation.sh; . /tests/irq.sh
# The guest's one PCI device with MSI-X is run.sh's `-device virtio-rng-pci,addr=0x3`; its
# driver stack (virtio_pci, virtio-rng) is modules, loaded only by the scenarios (modprobe), so
# a scenario decides whether the device has MSI-X vectors yet. The scenarios use it as a VM's
# PCI passthrough device.
DEV_BDF=0000:00:03.0
DEV=/sys/bus/pci/devices/$DEV_BDF
DEV_MODULES="virtio_pci virtio_rng"     # the transport binds the device, virtio-rng enables MSI-X
IRQ_SAVED=""                            # "N:LIST ..." affinities a scenario set; irq_cleanup restores

# irqdom FILE NAME IRQ ISOLATE CPU...: a domain (no hugepages) with one vCPU per CPU (vCPU i
# pinned to the i-th CPU), metadata <kvmtune:irq cpus="IRQ"/> and, unless ISOLATE is "-",
# <kvmtune:isolate cpus="ISOLATE"/>, and the device as a PCI hostdev.
irqdom() {
  local file=$1 name=$2 irq=$3 iso=$4 tune bus slot
  shift 4
  tune="<kvmtune:irq cpus=\"$irq\"/>"
  [ "$iso" = - ] || tune="<kvmtune:isolate cpus=\"$iso\"/>$tune"
  bus=$(echo $DEV_BDF | cut -d: -f2)
  slot=$(echo $DEV_BDF | cut -d: -f3 | cut -d. -f1)
  tunedom "$file" "$name" "$tune" \
    "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x${DEV_BDF%%:*}' bus='0x$bus' slot='0x$slot' function='0x${DEV_BDF##*.}'/></source></hostdev>" \
    "$@"
}

# --- the device and its driver ---------------------------------------------------------------
dev_msi_irqs() { ls "$DEV/msi_irqs" 2>/dev/null | sort -n | tr '\n' ' '; }
# dev_irqs: the device's IRQs as the contract counts them: MSI/MSI-X vectors, the INTx line
# (the `irq` file, when non-zero and /proc/irq/N exists), /proc/interrupts lines naming it.
dev_irqs() {
  local intx
  {
    ls "$DEV/msi_irqs" 2>/dev/null
    intx=$(cat "$DEV/irq")
    [ "$intx" != 0 ] && [ -d /proc/irq/$intx ] && echo "$intx"
    awk -v b="($DEV_BDF)" '$1 ~ /^[0-9]+:$/ && index($0, b) { sub(/:/, "", $1); print $1 }' /proc/interrupts
  } | sort -nu | tr '\n' ' '
}
driver_loaded() { [ -d /sys/module/virtio_rng ]; }
driver_load() {
  local m
  for m in $DEV_MODULES; do
    modprobe $m 2>/tmp/modprobe.err || fail "harness: modprobe $m failed: $(cat /tmp/modprobe.err)"
  done
  [ -e "$DEV/driver" ] || fail "harness: $DEV_BDF has no driver after modprobe $DEV_MODULES"
  [ -n "$(dev_msi_irqs)" ] || fail "harness: $DEV_BDF has no MSI-X vectors after modprobe $DEV_MODULES"
  note "driver loaded: $DEV_BDF bound to $(basename "$(readlink "$DEV/driver")"), MSI-X IRQs $(dev_msi_irqs)"
}
# driver_unload: no virtio module left (modprobe -r also tries the dependencies, and says 1
# when another module still uses them: only what is left afterwards counts).
driver_unload() {
  local m
  for m in virtio_rng virtio_pci; do
    [ -d /sys/module/$m ] && modprobe -r $m 2>/dev/null
  done
  for m in virtio_rng virtio_pci virtio; do
    [ -d /sys/module/$m ] && fail "harness: module $m still loaded after modprobe -r virtio_rng virtio_pci"
  done
  [ -z "$(dev_msi_irqs)" ] || fail "harness: $DEV_BDF still has MSI-X IRQs $(dev_msi_irqs) without its driver"
  [ -e "$DEV/driver" ] && fail "harness: $DEV_BDF still bound to $(readlink "$DEV/driver")"
  return 0
}
# dev_fire: make the device interrupt (virtio-rng answers a read of /dev/hwrng with an
# interrupt on its request queue's vector). Returns non-zero if the read failed or took over 10 s.
# Not through busybox's `timeout`: it leaves a watcher process polling its parent once a second
# after the command ends, which a later "no new process" check would catch.
exited() { [ ! -e /proc/$1 ] || [ "$(awk '{ print $3 }' /proc/$1/stat 2>/dev/null)" = Z ]; }   # PID
dev_fire() {
  local p
  dd if=/dev/hwrng of=/dev/null bs=16 count=4 2>/dev/null & p=$!
  wait_until 10 exited $p || { kill -9 $p; wait $p; return 1; }
  wait $p
}
# irq_counts IRQ: the per-CPU counts of IRQ in /proc/interrupts, space separated
irq_counts() { awk -v n="$1:" '$1 == n { s = ""; for (i = 2; i <= 5; i++) s = s " " $i; print s }' /proc/interrupts; }

# --- affinities ------------------------------------------------------------------------------
# irq_snapshot FILE: `N LIST` for every /proc/irq/N, and `default MASK`.
irq_snapshot() {
  local d
  {
    for d in /proc/irq/[0-9]*; do echo "${d##*/} $(cat $d/smp_affinity_list)"; done | sort -n
    echo "default $(cat /proc/irq/default_smp_affinity)"
  } > "$1"
}
# irq_set N LIST: set an affinity for the scenario's own purpose; irq_cleanup restores it.
irq_set() {
  IRQ_SAVED="$IRQ_SAVED $1:$(cat /proc/irq/$1/smp_affinity_list)"
  echo "$2" > /proc/irq/$1/smp_affinity_list 2>/dev/null
}
irq_cleanup() {
  local s
  for s in $IRQ_SAVED; do echo "${s#*:}" > /proc/irq/${s%%:*}/smp_affinity_list 2>/dev/null; done
  return 0
}
list_of_mask() {   # list_of_mask HEXMASK: "0-2" style list (CPUs < 32)
  local m=$((0x$1)) c=0 out="" start=-1
  while [ $c -le 32 ]; do
    if [ $c -lt 32 ] && [ $(( (m >> c) & 1 )) = 1 ]; then
      [ $start -lt 0 ] && start=$c
    elif [ $start -ge 0 ]; then
      if [ $start = $((c - 1)) ]; then out="$out,$start"; else out="$out,$start-$((c - 1))"; fi
      start=-1
    fi
    c=$((c + 1))
  done
  echo "${out#,}"
}

# status_irqs: run `kvmtune status` into /tmp/status.out; STATUS_PINNED = "N:VM:CPUS ..." from
# its `IRQ N of VM "VM" pinned to CPUs CPUS` lines, STATUS_REFUSED = its managed list.
status_irqs() {
  "$KT" status > /tmp/status.out 2>&1 || fail "$1: kvmtune status exited $?: $(head -1 /tmp/status.out)"
  grep -E '^IRQs|^  IRQ |^  refused|^  irqbalance' /tmp/status.out | sed 's/^/  status: /'
  STATUS_PINNED=$(sed -n 's/^  IRQ \([0-9]*\) of VM "\([^"]*\)" pinned to CPUs \(.*\)$/\1:\2:\3/p' /tmp/status.out | tr '\n' ' ')
  STATUS_REFUSED=$(sed -n 's/^  refused by the kernel (managed or fixed IRQs, left where it put them): //p' /tmp/status.out)
}

# irq_expect_placed BASE VM DEVIRQS TARGET ISO HK WHAT: with VM running and CPUs ISO isolated:
#   - every IRQ of DEVIRQS has smp_affinity_list TARGET, and `status` says so, for exactly those;
#   - every other IRQ whose BASE affinity meets ISO is off ISO: BASE minus ISO, or HK when
#     nothing is left; unless `status` lists it as refused (managed), then it is as in BASE;
#   - every other IRQ is as in BASE; IRQs not in BASE have an affinity off ISO;
#   - default_smp_affinity is BASE's minus ISO (HK when nothing is left);
#   - `status` lists as refused only IRQs still on ISO.
irq_expect_placed() {
  local base=$1 vm=$2 devirqs=$3 target=$4 iso=$5 hk=$6 what=$7 n want got
  status_irqs "$what"
  irq_snapshot /tmp/irq.now
  awk -v dev=" $devirqs " -v target="$target" -v iso="$iso" -v hk="$hk" -v refused=" $STATUS_REFUSED " \
      -v pinned=" $STATUS_PINNED " -v vm="$vm" "$AWK_SETS"'
    function minus(x, y,   n, i, e, s) {   # x, y expanded; the elements of x not in y, expanded
      s = ","; n = split(x, e, ",")
      for (i = 1; i <= n; i++) if (e[i] != "" && index(y, "," e[i] ",") == 0) s = s e[i] ","
      return s
    }
    function same(x, y) { return subset(x, y) && subset(y, x) }
    function fmt(x,   c, out, start) {   # expanded set (< 32 CPUs) -> "0-2,5"
      out = ""; start = -1
      for (c = 0; c <= 32; c++) {
        if (c < 32 && index(x, "," c ",")) { if (start < 0) start = c }
        else if (start >= 0) { out = out "," start (start == c - 1 ? "" : "-" (c - 1)); start = -1 }
      }
      return substr(out, 2)
    }
    function maskset(m,   v, c, s, d) {   # hex mask (< 32 CPUs) -> expanded set
      v = 0; m = tolower(m); gsub(/,/, "", m)
      for (c = 1; c <= length(m); c++) { d = index("0123456789abcdef", substr(m, c, 1)) - 1; v = v * 16 + d }
      s = ","; for (c = 0; c < 32; c++) { if (v % 2) s = s c ","; v = int(v / 2) }
      return s
    }
    BEGIN { I = expand(iso); H = expand(hk); T = expand(target) }
    NR == FNR { base[$1] = $2; next }
    $1 == "default" {
      b = maskset(base["default"]); now = maskset($2)
      want = meets(b, I) ? minus(b, I) : b
      if (want == ",") want = H
      if (!same(now, want)) print "default_smp_affinity is " $2 " (CPUs " fmt(now) "), expected CPUs " fmt(want) " (was " base["default"] ")"
      next
    }
    {
      irq = $1; now = expand($2)
      if (index(dev, " " irq " ")) {
        if (!same(now, T)) print "device IRQ " irq " has smp_affinity_list " $2 ", expected " target
        if (!index(pinned, " " irq ":" vm ":")) print "status does not list device IRQ " irq " of VM \"" vm "\""
        else if (!index(pinned, " " irq ":" vm ":" $2 " ")) print "status lists device IRQ " irq " with other CPUs than " $2
        next
      }
      if (index(pinned, " " irq ":")) print "status lists IRQ " irq " as pinned for a VM; it is not a device IRQ"
      if (!(irq in base)) {
        if (meets(now, I)) print "IRQ " irq " (new) has smp_affinity_list " $2 ", on isolated CPUs " iso
        next
      }
      b = expand(base[irq])
      if (index(refused, " " irq " ")) {
        if (!meets(now, I)) print "status lists IRQ " irq " as refused (managed), but it is on " $2 ", off isolated CPUs"
        else if (!same(now, b)) print "refused IRQ " irq " has smp_affinity_list " $2 ", was " base[irq]
        next
      }
      if (meets(b, I)) {
        want = minus(b, I); if (want == ",") want = H
        if (!same(now, want)) print "IRQ " irq " has smp_affinity_list " $2 ", expected " fmt(want) " (was " base[irq] ", isolated " iso (want == H ? ", nothing left: housekeeping" : "") ")"
      } else if (!same(now, b)) print "IRQ " irq " has smp_affinity_list " $2 ", was " base[irq] " (not on isolated CPUs: not to be touched)"
    }' "$base" /tmp/irq.now > /tmp/irq.wrong
  for n in $devirqs; do
    grep -q "^$n " /tmp/irq.now || echo "device IRQ $n has no /proc/irq/$n" >> /tmp/irq.wrong
  done
  if [ -s /tmp/irq.wrong ]; then
    echo "IRQ affinities ($what), before -> now:"
    awk 'NR == FNR { b[$1] = $2; next } { print "  " $1 " " ($1 in b ? b[$1] : "(new)") " -> " $2 }' "$base" /tmp/irq.now
    sed 's/^/  wrong: /' /tmp/irq.wrong
    fail "$what: $(wc -l < /tmp/irq.wrong) IRQ affinities wrong: $(head -3 /tmp/irq.wrong | tr '\n' ';')"
  fi
  note "$what: device IRQs [$devirqs] on $target, other IRQs off $iso (refused: ${STATUS_REFUSED:-none}), default_smp_affinity $(cat /proc/irq/default_smp_affinity)"
}

# irq_expect_same BASE WHAT: every /proc/irq/N/smp_affinity_list and default_smp_affinity
# exactly as in BASE (same IRQs, same text).
irq_expect_same() {
  irq_snapshot /tmp/irq.now
  if ! cmp -s "$1" /tmp/irq.now; then
    echo "IRQ affinities differ from $1 ($2):"; diff "$1" /tmp/irq.now | sed 's/^/  /'
    fail "$2: IRQ affinities not as before: $(diff "$1" /tmp/irq.now | grep '^[-+][^-+]' | tr '\n' ';')"
  fi
  note "$2: every IRQ affinity and default_smp_affinity as before"
}

# dev_expect_fired DEVIRQS TARGET WHAT: make the device interrupt. Without interrupt remapping
# x86 moves a vector when it next fires (that interrupt still lands where it was), so first the
# device interrupts until each vector's effective_affinity_list is within TARGET: a vector
# that fired and is still elsewhere fails. Then every interrupt of one more read must land on
# TARGET's CPUs. A vector that never fires (virtio's config vector) is only a note.
in_set() { awk -v g="$1" -v t="$2" "$AWK_SETS"'BEGIN { exit !subset(expand(g), expand(t)) }'; }
irq_total() { set -- $(irq_counts $1); echo $(($1 + $2 + $3 + $4)); }
irq_fired_since() { [ "$(irq_total "$1")" -gt "$2" ]; }   # IRQ TOTAL: it fired since TOTAL
dev_expect_fired() {
  local devirqs=$1 target=$2 what=$3 n c0 tries eff got c d
  for n in $devirqs; do
    c0=$(irq_total $n); tries=0
    while ! in_set "$(cat /proc/irq/$n/effective_affinity_list)" "$target" && [ $tries -lt 5 ]; do
      dev_fire || note "$what: reading /dev/hwrng failed"
      sleep 0.5; tries=$((tries + 1))
    done
    eff=$(cat /proc/irq/$n/effective_affinity_list)
    if ! in_set "$eff" "$target"; then
      [ "$(irq_total $n)" -gt "$c0" ] &&
        fail "$what: device IRQ $n fired $(( $(irq_total $n) - c0 )) times since pinned to $target, effective_affinity_list still $eff"
      note "$what: device IRQ $n did not fire ($tries reads of /dev/hwrng), effective_affinity_list $eff"
      continue
    fi
    set -- $(irq_counts $n)
    c0=$(irq_total "$n")
    dev_fire || note "$what: reading /dev/hwrng failed"
    # The read's interrupts are counted as they are handled: wait for the count to move (up to
    # 2 s). A read that made none is the note below, not a failure.
    wait_until 2 irq_fired_since "$n" "$c0" || true
    set -- "$@" $(irq_counts $n)
    [ $# = 8 ] || fail "harness: no /proc/interrupts counts for IRQ $n"
    got=""; d=0
    for c in 0 1 2 3; do
      eval "d$c=\$((\${$((c + 5))} - \${$((c + 1))}))"
      eval "[ \$d$c -gt 0 ]" && got="$got,$c"
    done
    got=${got#,}
    if [ -z "$got" ]; then
      note "$what: device IRQ $n effective $eff; no interrupt from one more read"
      continue
    fi
    in_set "$got" "$target" ||
      fail "$what: device IRQ $n (effective $eff) fired on CPUs $got (per-CPU deltas $d0 $d1 $d2 $d3), pinned to $target"
    note "$what: device IRQ $n effective $eff, fired $((d0 + d1 + d2 + d3)) times on CPUs $got"
  done
}
