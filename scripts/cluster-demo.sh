#!/usr/bin/env bash
# One cluster network across three netns "hosts" on this machine: etcd in an underlay netns,
# a cnm-agent per host, two containers per host via the `cluster` CNI plugin, pings across
# hosts. Everything is removed on exit, Ctrl-C or failure. Run as root.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

P=cnmdemo$$
WORK=$(mktemp -d /tmp/cnm-demo.XXXXXX)
NET=demo
SPEC="$NET=10.252.0.0/16,block=26,vni=4200"
ETCD="http://192.168.79.1:23790"
PIDS=()
NSS=()

cleanup() {
    set +e
    echo ">> cleaning up"
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo ">> building cnm-agent, cluster, bridge, host-local"
(cd "$REPO_ROOT" && cargo build -q -p cnm-agent -p cluster -p bridge -p host-local --bins)
BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug"
mkdir -p "$WORK/cni"
for p in cluster bridge host-local; do ln -s "$BIN/$p" "$WORK/cni/$p"; done

UL=$P-ul; ip netns add "$UL"; NSS+=("$UL")
ip -n "$UL" link set lo up
ip -n "$UL" link add ulbr type bridge; ip -n "$UL" link set ulbr up
ip -n "$UL" link add mgbr type bridge; ip -n "$UL" addr add 192.168.79.1/24 dev mgbr; ip -n "$UL" link set mgbr up

echo ">> etcd in $UL ($ETCD, data in $WORK/etcd)"
ip netns exec "$UL" etcd --name e --data-dir "$WORK/etcd" \
    --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster e=http://127.0.0.1:23800 >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do ip netns exec "$UL" etcdctl --endpoints "$ETCD" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done

for i in 1 2 3; do
    H=$P-h$i; ip netns add "$H"; NSS+=("$H"); ip -n "$H" link set lo up
    ip -n "$UL" link add ul$i type veth peer name ul0 netns "$H"
    ip -n "$UL" link set ul$i master ulbr up
    ip -n "$UL" link add mg$i type veth peer name mg0 netns "$H"
    ip -n "$UL" link set mg$i master mgbr up
    ip -n "$H" addr add 192.168.80.1$i/24 dev ul0; ip -n "$H" link set ul0 up
    ip -n "$H" addr add 192.168.79.1$i/24 dev mg0; ip -n "$H" link set mg0 up
    mkdir -p "$WORK/h$i/state" "$WORK/h$i/run"
    echo ">> cnm-agent on h$i (log $WORK/h$i/agent.log)"
    ip netns exec "$H" "$BIN/cnm-agent" --etcd "$ETCD" --host h$i --underlay ul0 \
        --state-dir "$WORK/h$i/state" --run-dir "$WORK/h$i/run" --network "$SPEC" \
        >"$WORK/h$i/agent.log" 2>&1 &
    PIDS+=($!)
done
for i in 1 2 3; do
    for _ in $(seq 100); do [ -s "$WORK/h$i/run/$NET/blocks.json" ] && break; sleep 0.1; done
done
sleep 1

declare -A IP
for i in 1 2 3; do
    for k in 1 2; do
        C=$P-c$i$k; ip netns add "$C"; NSS+=("$C")
        conf="{\"cniVersion\":\"1.1.0\",\"name\":\"$NET\",\"type\":\"cluster\",\"network\":\"$NET\",\"runDir\":\"$WORK/h$i/run\"}"
        out=$(echo "$conf" | ip netns exec $P-h$i env CNI_COMMAND=ADD CNI_CONTAINERID=$C \
            CNI_NETNS=/run/netns/$C CNI_IFNAME=eth0 CNI_PATH="$WORK/cni" "$WORK/cni/cluster")
        IP[$i$k]=$(echo "$out" | jq -r '.ips[0].address' | cut -d/ -f1)
        echo "   container c$i$k on h$i: ${IP[$i$k]}"
    done
done

echo ">> etcd keys:"
ip netns exec "$UL" etcdctl --endpoints "$ETCD" get --prefix /cnm/v1/ --keys-only | sed '/^$/d; s/^/   /'
echo ">> h1 routes to the other hosts' blocks:"
ip -n $P-h1 route show dev vx-4200 | sed 's/^/   /'

echo ">> cross-host pings"
fail=0
for a in 11 12 21 22 31 32; do
    for b in 11 12 21 22 31 32; do
        [ "$a" = "$b" ] && continue
        if ip netns exec $P-c$a busybox ping -c1 -W1 "${IP[$b]}" >/dev/null; then r=ok; else r=FAIL; fail=1; fi
        echo "   c$a -> c$b (${IP[$b]}): $r"
    done
done
[ "$fail" = 0 ] && echo ">> all 30 pairs reachable" || { echo ">> some pings failed"; exit 1; }
