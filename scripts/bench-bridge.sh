#!/usr/bin/env bash
# Benchmarks our bridge plugin against the reference (Debian's /usr/lib/cni) in one run, both
# with host-local and ipMasq, inside throwaway network namespaces (root needed): sequential
# ADD/DEL p50/p95 and 40 ADDs with 16 in parallel, with ratios reference/ours.
# Extra arguments go to the driver, e.g. --iterations 200 or --check-targets (exit 1 when ours
# misses a target).
# BENCH_JSON=FILE also writes the figures as JSON (rows of ours vs peer; see scripts/bench-report.sh).
source "$(dirname "$0")/lib.sh"
need_root
install_system_packages
bin_dir="$(build_release)"
exec "$bin_dir/cni-bench-bridge" --ours "$bin_dir" --reference /usr/lib/cni "$@"
