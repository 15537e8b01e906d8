#!/usr/bin/env bash
# Benchmarks the chain bridge -> portmap, ours against the reference (Debian's /usr/lib/cni
# bridge + portmap, conflist at cniVersion 1.0.0) in one run, inside throwaway network
# namespaces (root needed): chain and portmap-alone ADD/DEL p50 with 1 and with 1,000 mappings
# already on the node, printed with ratios reference/ours.
# Extra arguments go to the driver, e.g. --iterations 100 or --node-mappings 5000.
# BENCH_JSON=FILE also writes the figures as JSON (rows of ours vs peer; see scripts/bench-report.sh).
source "$(dirname "$0")/lib.sh"
need_root
install_system_packages
bin_dir="$(build_release)"
exec "$bin_dir/cni-bench-portmap" --ours "$bin_dir" --reference /usr/lib/cni "$@"
