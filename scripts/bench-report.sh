#!/usr/bin/env bash
# Runs every benchmark, ours side by side with its peer, in one run, and writes the figures as
# bench/results.json (with the machine: CPU, cores, kernel, date), bench/results.md (tables)
# and bench/results.png (chart; matplotlib from PyPI in a venv under target/bench-venv), and
# puts the chart and tables into the README's Performance section:
#   host-local at 10 / 1,000 / 20,000 reservations vs the reference  (bench-host-local.sh)
#   bridge ADD/DEL and parallel ADD vs the reference                  (bench-bridge.sh)
#   bridge -> portmap chain vs the reference                          (bench-portmap.sh)
#   docker run via the cnm-shim vs docker's own bridge driver          (bench-cnm.sh)
#   cluster join convergence, cluster vs bridge ADD, VXLAN throughput (bench-cluster.sh)
# Each bench writes its figures to the file named by BENCH_JSON; a bench that fails is shown as
# failed in the report and the others still run (exit status 1 at the end).
# Usage: scripts/bench-report.sh [--quick] [--out DIR]
#   --quick  reduced iteration counts (about 10-15 minutes instead of about 30); the report says so
#   --out    where the three files go (default: bench/ in the repository)
source "$(dirname "$0")/lib.sh"
need_root
mode=full
out="$REPO_ROOT/bench"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) mode=quick ;;
        --out) out="$2"; shift ;;
        *) echo "usage: $0 [--quick] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
install_system_packages
# One build for every bench (they would each run cargo again otherwise).
CNI_RS_PREBUILT="$(build_release)"
export CNI_RS_PREBUILT

if [ "$mode" = quick ]; then
    a_ipam=(--iters 40 --ref-iters-large 8)
    a_bridge=(--iterations 100)
    a_portmap=(--iterations 12)
    a_cnm=(8)
    a_cluster=(--sim-hosts 60 --join-reps 3 --iterations 12 --iperf-seconds 3 --iperf-rounds 1)
else
    a_ipam=() a_bridge=() a_portmap=() a_cnm=() a_cluster=()
fi

work="$(mktemp -d /tmp/bench-report.XXXXXX)"
trap 'rm -rf "$work"' EXIT
failed=()
files=()
run_bench() { # NAME SCRIPT ARGS...
    local name="$1" script="$2"
    shift 2
    echo ">> $name: $script $*"
    files+=("$work/$name.json")
    if ! BENCH_JSON="$work/$name.json" "$REPO_ROOT/scripts/$script" "$@" 2>&1 | tee "$work/$name.log"; then
        failed+=("$name")
        rm -f "$work/$name.json"
        echo "!! $name failed (log above)" >&2
    fi
}

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
load="$(cut -d' ' -f1-3 /proc/loadavg)"
started="$(date -u +%Y-%m-%dT%H:%MZ)"

run_bench host-local bench-host-local.sh "${a_ipam[@]}"
run_bench bridge bench-bridge.sh "${a_bridge[@]}"
run_bench portmap bench-portmap.sh "${a_portmap[@]}"
run_bench cnm bench-cnm.sh "${a_cnm[@]}"
run_bench cluster bench-cluster.sh --json "$work/cluster-full.json" "${a_cluster[@]}"

jq -n --arg cpu "${cpu:-unknown}" --arg cores "$(nproc)" --arg kernel "$(uname -r)" \
    --arg date "$started" --arg load "$load" --arg mode "$mode" \
    '{cpu: $cpu, cores: ($cores | tonumber), kernel: $kernel, date: $date, loadavg: $load, mode: $mode}' \
    >"$work/machine.json"

venv="${BENCH_VENV:-$REPO_ROOT/target/bench-venv}"
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    echo ">> pip install matplotlib into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q matplotlib
fi
readme=()
# The README shows the latest figures when they go to the repository's bench/.
[ "$out" = "$REPO_ROOT/bench" ] && readme=(--readme "$REPO_ROOT/README.md")
"$venv/bin/python" "$REPO_ROOT/scripts/bench-chart.py" "${readme[@]}" "$out" "$work/machine.json" "${files[@]}"

if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed benches: ${failed[*]}" >&2
    exit 1
fi
