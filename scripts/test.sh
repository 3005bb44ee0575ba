#!/usr/bin/env bash
# The project's one test command: installs what the tests need, then checks
# formatting, lints, builds the binaries and runs every test (unit,
# integration, end-to-end against the real Prometheus, Alertmanager,
# node_exporter and podman).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build binaries"
cargo build --workspace --bins --locked

echo "== tests"
# Start podman and friends from a scratch folder: conmon drops an `oom` marker
# file into the working directory of whoever started the container.
export VIGIL_TEST_SCRATCH="$(mktemp -d)"
cargo test --workspace --locked --no-fail-fast -- --test-threads=2

echo "== fuzz targets (each briefly, from the committed seed corpus)"
# VIGIL_FUZZ_SECONDS=0 skips them; scripts/fuzz.sh itself skips without
# the nightly toolchain or cargo-fuzz. CI builds the targets without
# AddressSanitizer and unoptimised (the long runs of docs/reliability.md use
# the full instrumentation): the build is most of the cost.
if [ "${VIGIL_FUZZ_SECONDS:-4}" != 0 ]; then
  FUZZ_BUILD_ARGS="${FUZZ_BUILD_ARGS--s none --dev}" bash scripts/fuzz.sh "${VIGIL_FUZZ_SECONDS:-4}"
fi
