#!/usr/bin/env bash
# Runs every check and test of the project: formatting, clippy, unit tests, and the
# integration tests that exec the built plugins in real network namespaces (root needed).
source "$(dirname "$0")/lib.sh"
need_root
install_system_packages "${TEST_PACKAGES[@]}"
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
echo ">> the release plugins (static; musl where available: what install.sh installs) through the plugin suites"
# The debug binaries above carry test-only switches; these are the binaries users run. The
# suites that need the switches (kill9, soak) stay on the debug build.
relbin="$(mktemp -d /tmp/cni-rs-relbin.XXXXXX)"
trap 'rm -rf "$relbin"' EXIT
copy_executables "${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug" "$relbin"
build_plugins "$relbin"
CNI_TEST_BIN_DIR="$relbin" cargo test -p cni-tests -q --no-fail-fast \
    --test bridge --test loopback --test portmap --test firewall --test tuning --test spoofchk \
    --test conf --test cnitool --test ctr_cni --test podman --test world --test cluster \
    -- --test-threads="${TEST_THREADS:-4}"
echo ">> scripts/fuzz.sh (every fuzz target, ${FUZZ_SECONDS:-20} s each)"
"$REPO_ROOT/scripts/fuzz.sh"
