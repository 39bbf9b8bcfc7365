#!/usr/bin/env bash
# Run kvmtune's cargo-fuzz targets on the stable toolchain.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      default: 25 s for each of domain_xml cpulist policy
# cargo-fuzz needs nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets the stable compiler
# accept them. Installs cargo-fuzz when missing. A crash leaves its input in
# fuzz/artifacts/TARGET/: minimise it (`cargo fuzz tmin`), fix the bug, and keep the input in
# fuzz/regressions/TARGET/, which `cargo test` replays (tests/fuzz_corpus.rs).
# New corpus entries go to a scratch directory; fuzz/corpus/ (committed, minimised with
# `cargo fuzz cmin`) is only read.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-25}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(domain_xml cpulist policy)
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  start=$(date +%s)
  cargo install cargo-fuzz --locked --quiet
  echo "fuzz: installed cargo-fuzz in $(( $(date +%s) - start )) s"
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  dict=()
  [ -f "$t.dict" ] && dict=(-dict="$t.dict")
  if cargo fuzz run "$t" "$scratch/$t" corpus/"$t" -- -max_total_time="$secs" -max_len=8192 \
      -timeout=10 -rss_limit_mb=1024 "${dict[@]}" 2> "$scratch/$t.log"; then
    echo "PASS fuzz/$t: $(grep -oE '#[0-9]+' "$scratch/$t.log" | tail -1 | tr -d '#') runs in ${secs} s"
  else
    echo "FAIL fuzz/$t:"; tail -30 "$scratch/$t.log" | sed 's/^/    /'
    failed=$((failed + 1))
  fi
done
echo "$(( ${#targets[@]} - failed )) passed, $failed failed"
[ "$failed" -eq 0 ]
