#!/usr/bin/env bash
# The main job on a fresh machine: install the system packages, build and install the plugins
# into /opt/cni/bin, install the default network (conf/10-cnirs.conflist) into /etc/cni/net.d,
# then start two containers with `ctr run --cni` (containerd's own CNI caller) and show them
# talking to each other and to their gateway. The containers are removed at the end; the
# network (bridge cnirs0) stays, as a CNI network does.
source "$(dirname "$0")/lib.sh"
need_root
install_system_packages
"$REPO_ROOT/scripts/install.sh"

CONF_DIR=/etc/cni/net.d
mkdir -p "$CONF_DIR"
install -m 0644 "$REPO_ROOT/conf/10-cnirs.conflist" "$CONF_DIR/10-cnirs.conflist"
record_installed "$CONF_DIR/10-cnirs.conflist"
echo "installed $CONF_DIR/10-cnirs.conflist"

# containerd: use the running one, or start it (machines without systemd).
if ! ctr version >/dev/null 2>&1; then
    if command -v systemctl >/dev/null && systemctl start containerd 2>/dev/null; then :; else
        echo ">> starting containerd"
        nohup containerd >/var/log/containerd-cnirs.log 2>&1 &
    fi
    for _ in $(seq 50); do ctr version >/dev/null 2>&1 && break; sleep 0.2; done
fi
ctr version >/dev/null

NS=cnirs-quickstart
IMG=cnirs/busybox:latest
if ! ctr -n "$NS" image ls -q | grep -qx "docker.io/$IMG"; then
    tarball="$(mktemp /tmp/cnirs-busybox.XXXXXX.tar)"
    "$REPO_ROOT/scripts/busybox-image.sh" "$tarball" "$IMG"
    ctr -n "$NS" image import "$tarball" >/dev/null
    rm -f "$tarball"
fi
IMG_REF="$(ctr -n "$NS" image ls -q | grep "$IMG" | head -1)"

# `ctr run --rm --cni` in the foreground is what calls CNI DEL (with an empty CNI_NETNS) when
# the task exits, so each container runs under its own backgrounded ctr.
pids=()
cleanup() {
    for c in qs-a qs-b; do ctr -n "$NS" task kill -s KILL "$c" >/dev/null 2>&1 || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for c in qs-a qs-b; do
        ctr -n "$NS" task rm -f "$c" >/dev/null 2>&1 || true
        ctr -n "$NS" container rm "$c" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT
cleanup

echo ">> ctr run --rm --cni: two containers on network cnirs"
ctrlog="$(mktemp /tmp/cnirs-ctr.XXXXXX)"
for c in qs-a qs-b; do
    ctr -n "$NS" run --rm --cni "$IMG_REF" "$c" sleep 3600 >>"$ctrlog" 2>&1 &
    pids+=("$!")
done
for c in qs-a qs-b; do
    for _ in $(seq 100); do
        ctr -n "$NS" task ls 2>/dev/null | grep -q "^$c .*RUNNING" && break; sleep 0.1
    done
done
if grep -q . "$ctrlog"; then
    echo "error: ctr run --cni failed:" >&2; cat "$ctrlog" >&2; rm -f "$ctrlog"; exit 1
fi
rm -f "$ctrlog"
addr_of() { ctr -n "$NS" task exec --exec-id "ip$RANDOM" "$1" ip -o -4 addr show eth0 | awk '{print $4}' | cut -d/ -f1; }
A=$(addr_of qs-a); B=$(addr_of qs-b)
echo "qs-a: $A   qs-b: $B"
echo ">> qs-a pings qs-b"
ctr -n "$NS" task exec --exec-id "p1$RANDOM" qs-a ping -c 2 -W 2 "$B"
echo ">> qs-b pings its gateway (the bridge)"
ctr -n "$NS" task exec --exec-id "p2$RANDOM" qs-b ping -c 2 -W 2 10.89.0.1
echo ">> reservations in the shared host-local store:"
ls /run/cni/networks/cnirs
echo ">> masquerade state (nftables table inet cni_rs):"
nft list table inet cni_rs 2>/dev/null | grep -E 'set masq|elements' || true
cleanup
trap - EXIT
echo ">> after the containers stopped: $(ls /run/cni/networks/cnirs | grep -cv -e lock -e last_reserved) reservations, $(nft -j list table inet cni_rs 2>/dev/null | grep -o 'cnirs-quickstart' | wc -l) masquerade elements left"
echo "OK: containers on network cnirs talked; stopping them released everything."
