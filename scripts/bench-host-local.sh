#!/usr/bin/env bash
# Benchmarks our host-local IPAM against the reference (Debian's /usr/lib/cni/host-local) in one
# run: ADD and DEL latency p50/p95 at 10, 1,000 and 20,000 live reservations, one process per
# call as a runtime does, with the ratio reference/ours. Root is needed (a throwaway netns).
# Extra arguments go to the driver, e.g. --iters 500 or --sizes 10,50000.
# BENCH_JSON=FILE also writes the figures as JSON (rows of ours vs peer; see scripts/bench-report.sh).
source "$(dirname "$0")/lib.sh"
need_root
if [ ! -x /usr/lib/cni/host-local ]; then
    echo ">> apt-get install containernetworking-plugins (the reference peer)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containernetworking-plugins >/dev/null
fi
bin_dir="$(build_release)"
exec "$bin_dir/cni-bench-ipam" --ours "$bin_dir/host-local" --ref /usr/lib/cni/host-local "$@"
