# topologies: 2node
# Not enough memory fails the start cleanly, and libvirt's follow-up calls change nothing.
# (a) more than node 1 has at all: prepare exits 1 with one `kvmtune: ` line, without asking
#     the kernel for a single page, every pool on every node unchanged.
# (b) floor 0 and a request just under node 1's MemFree: the plan passes, the real kernel gives
#     fewer pages than asked (its watermarks keep some memory back), kvmtune rolls back: exit 1,
#     every pool unchanged, and the kernel was really asked (htlb_buddy_alloc_success grew).
. /tests/lib.sh

failed_start() {   # failed_start NAME XML WHAT: prepare fails, then stopped + release failed
  hook_fails "$1" prepare begin - "$2"
  expect_snapshot /tmp/base "$3: after the failed prepare"
  hook_ok "$1" stopped end - "$2"
  hook_ok "$1" release end failed "$2"
  RELEASED_VMS="$RELEASED_VMS $1"
  expect_snapshot /tmp/base "$3: after stopped + release end failed"
}

# (a) node 1 has 3 GiB; ask for 4 GiB there.
free1=$(node_memfree_kb 1)
note "node 1 MemFree ${free1} kB"
mkdom /tmp/big.xml s4-toobig 4096 "" "$(strict 1)"
save_snapshot /tmp/base
ok0=$(vmstat htlb_buddy_alloc_success)
failed_start s4-toobig /tmp/big.xml "(a) 4 GiB on a 3 GiB node"
ok1=$(vmstat htlb_buddy_alloc_success)
[ "$ok1" = "$ok0" ] || fail "(a) kvmtune allocated $((ok1 - ok0)) pages before finding that node 1 is too small (the plan should fail before touching anything)"

# (a') the same with a policy floor: what fits MemFree but not MemFree - floor fails too.
policy 1GiB true 5s
pages=$(( (free1 - 512 * 1024) / 2048 ))          # leaves 512 MiB, under the 1 GiB floor
mkdom /tmp/floor.xml s4-floor $((pages * 2)) "" "$(strict 1)"
ok0=$(vmstat htlb_buddy_alloc_success)
failed_start s4-floor /tmp/floor.xml "(a') under a 1 GiB floor"
ok1=$(vmstat htlb_buddy_alloc_success)
[ "$ok1" = "$ok0" ] || fail "(a') kvmtune allocated $((ok1 - ok0)) pages although the plan breaks the floor"

# (b) floor 0: ask for all but one 2 MiB page of node 1's MemFree.
policy 0MiB true 5s
free1=$(node_memfree_kb 1)
pages=$(( free1 / 2048 - 1 ))
note "node 1 MemFree ${free1} kB; asking for $pages x 2 MiB; /proc/zoneinfo min watermarks:"
grep -E '^Node|^ +min ' /proc/zoneinfo | sed 's/^/    /' | paste - - | sed 's/^/  /'
mkdom /tmp/near.xml s4-nearfree $((pages * 2)) "" "$(strict 1)"
ok0=$(vmstat htlb_buddy_alloc_success); ko0=$(vmstat htlb_buddy_alloc_fail)
failed_start s4-nearfree /tmp/near.xml "(b) just under MemFree, floor 0"
ok1=$(vmstat htlb_buddy_alloc_success); ko1=$(vmstat htlb_buddy_alloc_fail)
note "(b) kernel: $((ok1 - ok0)) pages allocated, $((ko1 - ko0)) allocations failed"
[ $((ok1 - ok0)) -gt 0 ] || fail "(b) kvmtune never asked the kernel for pages (expected the plan to pass with floor 0 and the kernel to fall short)"
check_state_clean
