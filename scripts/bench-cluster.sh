#!/usr/bin/env bash
# Benchmark of cluster networks (cnm-agent + the `cluster` plugin + kernel VXLAN), in one run on
# this machine, everything in throwaway network namespaces with its own etcd (own ports, temp
# data dir), removed at the end, also on failure or Ctrl-C (root needed):
#   - 200 simulated hosts register a block each in etcd; time for one real agent to program them
#     (3 kernel entries per remote block) and to remove them again;
#   - join convergence: a new host's first container reachable from every other host (p50/p90);
#   - ADD/DEL latency of `cluster` against bridge + host-local with the same options (ratio);
#   - iperf3 TCP throughput container to container over VXLAN against host to host (ratio).
# Prints a table and writes the figures as JSON (default target/bench-cluster.json; later
# arguments override it).
# Usage: scripts/bench-cluster.sh [--sim-hosts N] [--join-reps N] [--iterations N]
#                                 [--iperf-seconds S] [--iperf-rounds N] [--json FILE]
# BENCH_JSON=FILE also writes the figures as JSON (rows of ours vs peer; see scripts/bench-report.sh).
source "$(dirname "$0")/lib.sh"
need_root
install_system_packages
bin_dir="$(build_release)"
mkdir -p "$REPO_ROOT/target"
exec "$bin_dir/cni-bench-cluster" --json "$REPO_ROOT/target/bench-cluster.json" "$@"
