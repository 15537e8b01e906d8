#!/usr/bin/env bash
# The main job on a fresh machine: install the system packages, build and install every plugin
# of the suite into /opt/cni/bin and cnm-shim into /usr/local/bin, install the default network
# (conf/10-cnirs.conflist: bridge cnirs0 + portmap, 10.89.0.0/24 and fd00:89::/64, masquerade)
# into /etc/cni/net.d, then show one network shared by two runtimes:
#   1. two containerd containers (`ctr run --cni`, containerd's own CNI caller) talk,
#   2. a Docker container on the same network (cnm-shim, `-o cni.network=cnirs`) talks to them,
#   3. a port it publishes (`-p 18080:8080`) answers from the host, also on 127.0.0.1.
# The containers are removed at the end; the networks stay, as CNI and Docker networks do
# (scripts/uninstall.sh removes everything).
source "$(dirname "$0")/lib.sh"
need_root
install_system_packages
"$REPO_ROOT/scripts/install.sh"

CONF_DIR=/etc/cni/net.d
NET=cnirs
SUBNET=10.89.0.0/24
STORE=/run/cni/networks/$NET
mkdir -p "$CONF_DIR"
install -m 0644 "$REPO_ROOT/conf/10-cnirs.conflist" "$CONF_DIR/10-cnirs.conflist"
record_installed "$CONF_DIR/10-cnirs.conflist"
echo "installed $CONF_DIR/10-cnirs.conflist"

wait_for() { # wait_for <tries of 0.2 s> <command...>
    local n=$1; shift
    for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    "$@" >/dev/null
}

# containerd: use the running one, or start it (machines without systemd).
if ! ctr version >/dev/null 2>&1; then
    if command -v systemctl >/dev/null && systemctl start containerd 2>/dev/null; then :; else
        echo ">> starting containerd"
        nohup containerd >/var/log/containerd-cnirs.log 2>&1 &
    fi
    wait_for 50 ctr version
fi

# cnm-shim before dockerd: dockerd looks the driver up in /run/docker/plugins.
if ! [ -S /run/docker/plugins/cnm.sock ] || ! pgrep -x cnm-shim >/dev/null; then
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        install -m 0644 "$REPO_ROOT/conf/cnm-shim.socket" "$REPO_ROOT/conf/cnm-shim.service" /etc/systemd/system/
        record_installed /etc/systemd/system/cnm-shim.socket
        record_installed /etc/systemd/system/cnm-shim.service
        systemctl daemon-reload
        systemctl enable --now cnm-shim.socket
    else
        echo ">> starting cnm-shim"
        nohup /usr/local/bin/cnm-shim --name cnm --cni-path /opt/cni/bin \
            >/var/log/cnm-shim.log 2>&1 &
        wait_for 50 test -S /run/docker/plugins/cnm.sock
    fi
fi

# dockerd: use the running one, or start it.
if ! docker info >/dev/null 2>&1; then
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null; then :; else
        echo ">> starting dockerd"
        nohup dockerd >/var/log/dockerd-cnirs.log 2>&1 &
    fi
    wait_for 150 docker info
fi

NS=cnirs-quickstart
IMG=cnirs/busybox:latest
tarball="$(mktemp /tmp/cnirs-busybox.XXXXXX.tar)"
"$REPO_ROOT/scripts/busybox-image.sh" "$tarball" "$IMG"
if ! ctr -n "$NS" image ls -q | grep -qx "docker.io/$IMG"; then
    ctr -n "$NS" image import "$tarball" >/dev/null
fi
docker image inspect "$IMG" >/dev/null 2>&1 || docker load -q -i "$tarball" >/dev/null
rm -f "$tarball"
IMG_REF="$(ctr -n "$NS" image ls -q | grep "$IMG" | head -1)"

# `ctr run --rm --cni` in the foreground is what calls CNI DEL (with an empty CNI_NETNS) when
# the task exits, so each container runs under its own backgrounded ctr.
pids=()
cleanup() {
    docker rm -f qs-docker >/dev/null 2>&1 || true
    for c in qs-a qs-b; do ctr -n "$NS" task kill -s KILL "$c" >/dev/null 2>&1 || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for c in qs-a qs-b; do
        ctr -n "$NS" task rm -f "$c" >/dev/null 2>&1 || true
        ctr -n "$NS" container rm "$c" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT
cleanup

echo
echo "== 1. containerd: ctr run --rm --cni, two containers on CNI network $NET"
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

echo
echo "== 2. Docker: network $NET bound to the same CNI network (cnm-shim)"
if ! docker network inspect "$NET" >/dev/null 2>&1; then
    docker network create -d cnm --ipam-driver cnm --subnet "$SUBNET" -o cni.network="$NET" "$NET"
fi
docker run -d --name qs-docker --network "$NET" -p 18080:8080 "$IMG" \
    sh -c 'echo "hello from the Docker container" >/tmp/index.html && busybox httpd -f -p 8080 -h /tmp' >/dev/null
D=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" qs-docker)
echo "qs-docker: $D"
echo ">> qs-docker pings qs-a and qs-b (containerd)"
docker exec qs-docker ping -c 2 -W 2 "$A"
docker exec qs-docker ping -c 2 -W 2 "$B"
echo ">> qs-b (containerd) pings qs-docker"
ctr -n "$NS" task exec --exec-id "p3$RANDOM" qs-b ping -c 2 -W 2 "$D"

echo
echo "== 3. the port qs-docker publishes (-p 18080:8080) answers from the host"
hostip=$(ip -o -4 addr show scope global | awk '$2 !~ /^(cnirs|cnm|docker|br-|veth)/ {sub("/.*", "", $4); print $4; exit}')
for target in 127.0.0.1 ${hostip:+"$hostip"}; do
    echo ">> curl http://$target:18080/"
    wait_for 25 curl -sf -m 2 "http://$target:18080/"
    curl -sf -m 2 "http://$target:18080/"
done

echo
echo ">> one host-local store for both runtimes ($STORE):"
ls "$STORE" | grep -v -e '^lock$' -e '^last_reserved'
cleanup
trap - EXIT
left=$(ls "$STORE" | grep -cv -e '^lock$' -e '^last_reserved' || true)
echo ">> after the containers stopped: $left reservations left in $STORE"

cat <<EOF

OK. What this set up (scripts/uninstall.sh removes it all):
  - plugins in /opt/cni/bin: ${SUITE_PLUGINS[*]}; cnm-shim in /usr/local/bin
  - CNI network "$NET" in $CONF_DIR/10-cnirs.conflist: bridge cnirs0, $SUBNET and fd00:89::/64,
    masquerade, portmap; reservations in $STORE
  - cnm-shim serving Docker at /run/docker/plugins/cnm.sock, and the Docker network "$NET"
    bound to the CNI network: docker run --network $NET ... and ctr run --cni share it
EOF
