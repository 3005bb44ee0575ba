#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for SECONDS each (default
# 15), starting from its committed seed corpus (fuzz/corpus/<target>). New
# inputs libFuzzer finds go to a scratch corpus (never into the tree); a
# crash leaves its input under fuzz/artifacts/<target>/ (gitignored) and fails
# the script. Skips with a message when the nightly toolchain or cargo-fuzz
# is absent (both are what libFuzzer's instrumentation needs).
#
#   scripts/fuzz.sh [SECONDS]              all targets
#   FUZZ_TARGETS="promql_http otlp_http" scripts/fuzz.sh 300
#   FUZZ_BUILD_ARGS="-s none --dev" scripts/fuzz.sh 8   (what CI runs: no
#     AddressSanitizer, unoptimised — a much cheaper build; the default
#     build is cargo-fuzz's own: AddressSanitizer + LeakSanitizer, optimised)
# Targets run one after another.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-15}
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain (cargo +nightly); skipping the fuzz targets"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed (cargo install cargo-fuzz); skipping the fuzz targets"
  exit 0
fi

targets=${FUZZ_TARGETS:-$(cd fuzz/fuzz_targets && ls ./*.rs | sed 's|^\./||; s|\.rs$||')}
echo "== fuzz: building the targets"
t0=$(date +%s)
# shellcheck disable=SC2086 # word splitting of the flags is wanted
cargo +nightly fuzz build ${FUZZ_BUILD_ARGS:-}
echo "fuzz: build took $(( $(date +%s) - t0 )) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in $targets; do
  seeds=fuzz/corpus/$t
  [ -d "$seeds" ] || { echo "fuzz: $t has no seed corpus at $seeds"; failed+=("$t"); continue; }
  mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
  echo "== fuzz: $t for ${secs}s"
  # -timeout: one input taking longer than this is a finding (a hang);
  # -rss_limit_mb: so is one that needs more memory. The scratch corpus comes
  # first: libFuzzer writes new inputs to the first directory only.
  # shellcheck disable=SC2086
  if ! cargo +nightly fuzz run ${FUZZ_BUILD_ARGS:-} "$t" "$scratch/$t" "$seeds" -- \
      -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -max_len=8192 \
      -print_final_stats=1 2>"$scratch/$t.log"; then
    tail -n 40 "$scratch/$t.log"
    failed+=("$t")
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+ *DONE' "$scratch/$t.log" | tr '\n' ' ' || true
  echo
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs under fuzz/artifacts/)"
  exit 1
fi
echo "fuzz: every target ran ${secs}s without a crash"
