#!/usr/bin/env bash
# Runs every check and test of the project: formatting, clippy, unit tests, and the
# integration tests that exec the built plugins in real network namespaces (root needed).
source "$(dirname "$0")/lib.sh"
need_root
install_system_packages
cd "$REPO_ROOT"
echo ">> cargo fmt --check"
cargo fmt --all -- --check
echo ">> cargo clippy -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings
echo ">> cargo build (the integration tests exec the built plugin binaries)"
cargo build --workspace --bins -q
echo ">> scripts/cnitool.sh (libcni's cnitool for tests/tests/cnitool; cached after the first build)"
"$REPO_ROOT/scripts/cnitool.sh" >/dev/null
echo ">> cargo test"
# Integration tests build namespaces and bridges; run test binaries one at a time so two
# suites never fight over the host's nftables or sysctls, while tests inside a suite still run
# in parallel.
cargo test --workspace -q --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
echo ">> scripts/fuzz.sh (every fuzz target, ${FUZZ_SECONDS:-20} s each)"
"$REPO_ROOT/scripts/fuzz.sh"
