#!/usr/bin/env bash
# Benchmark: `docker run --rm` on a cnm-shim network against the same on a native docker
# bridge network, in one run, interleaved, against a private dockerd (Debian's docker.io, its
# own containerd, data-root, exec-root and API socket) that runs with the shim inside a
# throwaway network namespace, so nothing on the host's network changes. Prints the ratio
# cnm/native of the total time (at most 1.0: the shim is no slower).
# Usage: scripts/bench-cnm.sh [ITERATIONS]   (default 30; release binaries are built first)
# BENCH_JSON=FILE also writes the figures as JSON (rows of ours vs peer; see scripts/bench-report.sh).
source "$(dirname "$0")/lib.sh"
need_root
install_system_packages
iters="${1:-30}"
bin_dir="$(build_release)"
docker_bin=/usr/bin/docker
[ -x "$docker_bin" ] || docker_bin=docker
image="cnmbench/busybox:latest"
tag="cnmb$$"
work="$(mktemp -d /tmp/cnmbench.XXXXXX)"
ns="$tag"
sock="/run/docker/plugins/$tag.sock"
pids=()

d() { DOCKER_HOST="unix://$work/docker.sock" DOCKER_CONFIG="$work/cli" "$docker_bin" "$@"; }

wait_for() { # WHAT SECONDS COMMAND...
    local what="$1" secs="$2"; shift 2
    for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "error: timed out waiting for $what (logs in $work)" >&2
    return 1
}

cleanup() {
    set +e
    if [ -S "$work/docker.sock" ]; then
        d ps -aq | xargs -r "$docker_bin" -H "unix://$work/docker.sock" rm -f >/dev/null 2>&1
        d network rm bench-cnm bench-native >/dev/null 2>&1
    fi
    # dockerd, then the shim, then containerd (each by PID, SIGTERM then SIGKILL).
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    done
    # containerd shims of this run (daemonized, so not our children): by PID.
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q "^/usr/bin/containerd-shim.*$work/containerd.sock"; then
            kill -9 "${p#/proc/}" 2>/dev/null
        fi
    done
    awk -v w="$work" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
    ip netns del "$ns" 2>/dev/null
    rm -f "$sock"
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up

cat >"$work/containerd.toml" <<EOF
version = 2
root = "$work/ctrd"
state = "$work/ctrd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOF
containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
ctrd_pid=$!
wait_for containerd 30 test -S "$work/containerd.sock"

nsenter --net="/run/netns/$ns" dockerd --data-root "$work/data" --exec-root "$work/exec" \
    --pidfile "$work/docker.pid" -H "unix://$work/docker.sock" \
    --containerd "$work/containerd.sock" >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
wait_for dockerd 60 d version

nsenter --net="/run/netns/$ns" "$bin_dir/cnm-shim" --name "$tag" --state-dir "$work/shim" \
    --cni-path "$bin_dir" >"$work/shim.log" 2>&1 &
shim_pid=$!
pids=("$dockerd_pid" "$shim_pid" "$ctrd_pid")
wait_for cnm-shim 30 python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])" "$sock"

"$REPO_ROOT/scripts/busybox-image.sh" "$work/busybox.tar" "$image"
d load -i "$work/busybox.tar" >/dev/null
d network create -d "$tag" --ipam-driver "$tag" --subnet 10.213.200.0/24 bench-cnm >/dev/null
d network create -d bridge --subnet 10.213.201.0/24 bench-native >/dev/null

run_ms() { # NETWORK -> milliseconds of one `docker run --rm`
    local t0 t1
    t0=$(date +%s%N)
    d run --rm --network "$1" "$image" sh -c : >/dev/null
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}

echo ">> warm-up"
for _ in 1 2 3; do run_ms bench-cnm >/dev/null; run_ms bench-native >/dev/null; done

echo ">> $iters x docker run --rm per network, interleaved"
cnm=(); native=()
for i in $(seq "$iters"); do
    # Alternate which one goes first, so neither always runs on a warmer cache.
    if [ $((i % 2)) -eq 0 ]; then
        cnm+=("$(run_ms bench-cnm)"); native+=("$(run_ms bench-native)")
    else
        native+=("$(run_ms bench-native)"); cnm+=("$(run_ms bench-cnm)")
    fi
done

stats() { # values... -> "total mean median p90"
    printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1; s+=$1} END {
        printf "%d %.1f %d %d", s, s/NR, v[int((NR+1)/2)], v[int(NR*0.9+0.999)] }'
}
read -r c_total c_mean c_med c_p90 <<<"$(stats "${cnm[@]}")"
read -r n_total n_mean n_med n_p90 <<<"$(stats "${native[@]}")"
printf '\n%-22s %10s %10s %10s\n' "network" "mean ms" "median ms" "p90 ms"
printf '%-22s %10s %10s %10s\n' "cnm-shim ($tag)" "$c_mean" "$c_med" "$c_p90"
printf '%-22s %10s %10s %10s\n' "native bridge" "$n_mean" "$n_med" "$n_p90"
ratio=$(awk -v a="$c_total" -v b="$n_total" 'BEGIN {printf "%.3f", a/b}')
echo
echo "ratio cnm/native (total time of $iters runs): $ratio"
if [ -n "${BENCH_JSON:-}" ]; then
    # Machine-readable figures (same layout as the Rust benches' BENCH_JSON), for bench-report.sh.
    row() { # METRIC OURS PEER
        printf '{"group":"docker run --rm (busybox)","metric":"%s","unit":"ms","better":"lower","ours":%s,"peer":%s,"peer_name":"docker bridge driver"}' "$1" "$2" "$3"
    }
    printf '{"bench":"cnm","params":{"iterations":%d},"rows":[%s,%s,%s]}\n' "$iters" \
        "$(row "mean" "$c_mean" "$n_mean")" "$(row "median" "$c_med" "$n_med")" \
        "$(row "p90" "$c_p90" "$n_p90")" >"$BENCH_JSON"
    echo "figures written to $BENCH_JSON"
fi
awk -v r="$ratio" 'BEGIN {exit !(r <= 1.0)}' && echo "OK: cnm-shim is no slower than docker's own bridge driver" \
    || echo "NOTE: cnm-shim is slower than docker's own bridge driver in this run"
