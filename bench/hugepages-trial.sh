#!/bin/sh
# One trial of section 2 of BENCHMARKS.md (POSIX sh: it runs on the host under bash and in the
# test guest under busybox): fragment the memory of node HP_NODE, reserve HP_PAGES pages of
# HP_SIZE_KB with one method, measure, give everything back. Prints one JSON line.
#
# Methods:
#   kvmtune  the hook's prepare for a domain of that many pages bound to the node (grows that
#            node's pool, compacts that node and retries within the policy's 10 s), then release
#   script   what the hook scripts users paste do: drop caches, compact all memory, set the
#            global count, and retry compaction + write until it is reached (bounded here by
#            the same 10 s, the scripts loop up to 1000 times); then the count back to 0
#   plain    one write of the global count; then back to 0
# Environment: HP_METHOD HP_NODE HP_CPUS (the node's CPUs) HP_SIZE_KB HP_PAGES HP_FRAG_MIB
# HP_CACHE (page-cache source for bench/fragment.c) HP_TOOLS (dir with fragment, msclock)
# HP_KVMTUNE (binary) HP_WORK (scratch dir); KVMTUNE_STATE_DIR, KVMTUNE_CONFIG for kvmtune.
set -u
: "${HP_METHOD:?}" "${HP_NODE:?}" "${HP_CPUS:?}" "${HP_SIZE_KB:?}" "${HP_PAGES:?}"
: "${HP_FRAG_MIB:?}" "${HP_CACHE:?}" "${HP_TOOLS:?}" "${HP_KVMTUNE:?}" "${HP_WORK:?}"
timeout_s=10
nodes=/sys/devices/system/node
pool_file() { echo "$nodes/node$1/hugepages/hugepages-${HP_SIZE_KB}kB/nr_hugepages"; }
if [ "$HP_SIZE_KB" = "$(awk '/^Hugepagesize:/{print $2}' /proc/meminfo)" ]; then
  global=/proc/sys/vm/nr_hugepages
else
  global=/sys/kernel/mm/hugepages/hugepages-${HP_SIZE_KB}kB/nr_hugepages
fi
now() { "$HP_TOOLS/msclock"; }
# Pages of this size on node $1.
node_pages() { cat "$(pool_file "$1")"; }
all_pages() { cat "$global"; }
# Free 2 MiB blocks on node $1 (buddy orders 9 and up, in 2 MiB units).
free_blocks() {
  awk -v n="Node $1," 'index($0, n) == 1 { for (o = 9; o + 5 <= NF; o++) s += $(o + 5) * 2 ^ (o - 9) } END { print s + 0 }' /proc/buddyinfo
}
cached_mib() { awk '/^Cached:/{print int($2 / 1024)}' /proc/meminfo; }
mem_free_mib() { awk '/MemFree:/{print int($4 / 1024)}' "$nodes/node$1/meminfo"; }

vm=kvmtune-bench-hp
xml="<domain type='kvm'><name>$vm</name><memory unit='KiB'>$((HP_PAGES * HP_SIZE_KB))</memory>
<memoryBacking><hugepages><page size='$HP_SIZE_KB' unit='KiB'/></hugepages></memoryBacking>
<vcpu>1</vcpu><numatune><memory mode='strict' nodeset='$HP_NODE'/></numatune></domain>"

[ "$(all_pages)" = 0 ] || { echo "hugepages-trial: the ${HP_SIZE_KB} kB pools are not empty" >&2; exit 1; }

# Fragment the node: the fragmenter runs on the node's CPUs, so its memory is the node's.
slab=$HP_WORK/slab
rm -rf "$slab" && mkdir -p "$slab"
taskset -c "$HP_CPUS" "$HP_TOOLS/fragment" "$HP_FRAG_MIB" "$HP_CACHE" "$slab" >"$HP_WORK/frag.out" 2>&1 &
frag=$!
echo "$frag" >"$HP_WORK/frag.pid"
until grep -q ready "$HP_WORK/frag.out" 2>/dev/null; do
  kill -0 "$frag" 2>/dev/null || { echo "hugepages-trial: fragment failed: $(cat "$HP_WORK/frag.out")" >&2; exit 1; }
  sleep 0.2
done
frag_stats=$(sed -n 's/^ready //p' "$HP_WORK/frag.out")
blocks_before=$(free_blocks "$HP_NODE")
free_before=$(mem_free_mib "$HP_NODE")
cached_before=$(cached_mib)

t0=$(now)
rc=0
case $HP_METHOD in
  kvmtune)
    printf '%s' "$xml" | "$HP_KVMTUNE" hook "$vm" prepare begin - 2>"$HP_WORK/err" || rc=$? ;;
  script)
    echo 3 >/proc/sys/vm/drop_caches
    echo 1 >/proc/sys/vm/compact_memory
    echo "$HP_PAGES" >"$global"
    tries=0
    end=$(awk -v t="$t0" -v s="$timeout_s" 'BEGIN { print t + s * 1000 }')
    while [ "$(all_pages)" -lt "$HP_PAGES" ] && [ "$tries" -lt 1000 ] \
      && awk -v n="$(now)" -v e="$end" 'BEGIN { exit !(n < e) }'; do
      echo 1 >/proc/sys/vm/compact_memory
      echo "$HP_PAGES" >"$global"
      tries=$((tries + 1))
    done
    [ "$(all_pages)" -ge "$HP_PAGES" ] || rc=1 ;;
  plain)
    echo "$HP_PAGES" >"$global"
    [ "$(all_pages)" -ge "$HP_PAGES" ] || rc=1 ;;
  *) echo "hugepages-trial: unknown method $HP_METHOD" >&2; exit 2 ;;
esac
t1=$(now)

on_node=$(node_pages "$HP_NODE")
total=$(all_pages)
cached_after=$(cached_mib)
err=$(head -c 300 "$HP_WORK/err" 2>/dev/null | tr -d '"\\' | tr '\n' ' ')
rm -f "$HP_WORK/err"

# Give everything back.
if [ "$HP_METHOD" = kvmtune ]; then
  printf '%s' "$xml" | "$HP_KVMTUNE" hook "$vm" release end - >/dev/null 2>&1
else
  echo 0 >"$global"
fi
kill "$frag" 2>/dev/null
wait "$frag" 2>/dev/null
rm -rf "$slab"
left=$(all_pages)

awk -v m="$HP_METHOD" -v kb="$HP_SIZE_KB" -v want="$HP_PAGES" -v rc="$rc" -v node="$on_node" \
  -v total="$total" -v t0="$t0" -v t1="$t1" -v bb="$blocks_before" -v fb="$free_before" \
  -v cb="$cached_before" -v ca="$cached_after" -v fs="$frag_stats" -v left="$left" -v err="$err" 'BEGIN {
  split(fs, f, " ")
  printf "{\"method\": \"%s\", \"size_kb\": %d, \"target\": %d, \"exit\": %d, \"ok\": %s, \"global_reached\": %s, \"node_pages\": %d, \"other_nodes_pages\": %d, \"ms\": %.1f, \"free_2m_blocks_before\": %d, \"node_free_mib_before\": %d, \"fragment\": {\"anon_kept_mib\": %d, \"page_cache_mib\": %d, \"files\": %d}, \"cached_mib_before\": %d, \"cached_mib_after\": %d, \"pages_left_after\": %d, \"error\": \"%s\"}\n",
    m, kb, want, rc, (node >= want ? "true" : "false"), (total >= want ? "true" : "false"), node, total - node, t1 - t0, bb, fb,
    f[1], f[2], f[3], cb, ca, left, err }'
