# topologies: 2node
# Two VMs on node 1. A needs 32 pages, B 64 (2 MiB).
# Pair 1: A runs, then B runs; release A then B.  Pair 2: the same, released B then A.
# Pair 3: A and B are both prepared before either starts (pages promised to A must not be
#         counted as free for B); release A then B.
# After the first release the pool still holds the remaining VM's pages (in use, none surplus);
# after the second every pool is back to the start.
. /tests/lib.sh

A=32; B=64
save_snapshot /tmp/base
base1=$(hp 1 $HP2M nr_hugepages)

after_first_release() {   # after_first_release REMAINING_PAGES WHAT
  local nr free sur
  nr=$(hp 1 $HP2M nr_hugepages); free=$(hp 1 $HP2M free_hugepages); sur=$(hp 1 $HP2M surplus_hugepages)
  note "$2: node 1 nr=$nr free=$free surplus=$sur"
  [ "$sur" = 0 ] || fail "$2: node 1 has $sur surplus pages: the pool was shrunk below the pages the remaining VM holds"
  [ "$nr" -ge $((base1 + $1)) ] || fail "$2: node 1's pool is $nr, it no longer covers the remaining VM's $1 pages (base $base1)"
  [ $((nr - free)) = "$1" ] || fail "$2: $((nr - free)) pages in use on node 1, expected the remaining VM's $1"
  expect_pool 1 $HP2M $((base1 + $1)) "$2"
}

for pair in 1 2 3; do
  a=s5-p$pair-a; b=s5-p$pair-b
  mkdom /tmp/$a.xml $a $((A * 2)) "" "$(strict 1)"
  mkdom /tmp/$b.xml $b $((B * 2)) "" "$(strict 1)"
  if [ $pair = 3 ]; then
    vm_prepare $a /tmp/$a.xml
    vm_prepare $b /tmp/$b.xml
    expect_pool 1 $HP2M $((base1 + A + B)) "pair 3: after both prepares"
    vm_run $a /tmp/$a.xml 1:$HP2M:$A
    vm_run $b /tmp/$b.xml 1:$HP2M:$B
  else
    vm_start $a /tmp/$a.xml 1:$HP2M:$A
    expect_pool 1 $HP2M $((base1 + A)) "pair $pair: A running"
    vm_start $b /tmp/$b.xml 1:$HP2M:$B
  fi
  expect_pool 1 $HP2M $((base1 + A + B)) "pair $pair: both running"
  expect_others_unchanged /tmp/base "pair $pair: both running" "node1 2048kB"
  if [ $pair = 2 ]; then
    vm_stop $b /tmp/$b.xml
    after_first_release $A "pair 2: B released, A running"
    vm_stop $a /tmp/$a.xml
  else
    vm_stop $a /tmp/$a.xml
    after_first_release $B "pair $pair: A released, B running"
    vm_stop $b /tmp/$b.xml
  fi
  expect_snapshot /tmp/base "pair $pair: both released"
  check_state_clean
done
