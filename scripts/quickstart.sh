#!/usr/bin/env bash
# The main job on a fresh machine: install system packages, build and install the plugins,
# then exercise them the way a runtime does.
source "$(dirname "$0")/lib.sh"
need_root
install_system_packages
"$REPO_ROOT/scripts/install.sh"
BIN_DIR="${CNI_BIN_DIR:-/opt/cni/bin}"

data="$(mktemp -d /tmp/cnirs-quickstart.XXXXXX)"
trap 'rm -rf "$data"' EXIT
conf=$(cat <<JSON
{"cniVersion":"1.1.0","name":"quickstart","type":"host-local-demo",
 "ipam":{"type":"host-local","dataDir":"$data",
         "ranges":[[{"subnet":"10.244.7.0/24"}],[{"subnet":"fd00:244:7::/64"}]],
         "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]}}
JSON
)
run() { # verb container-id
    CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=/var/run/netns/none CNI_IFNAME=eth0 \
    CNI_PATH="$BIN_DIR" CNI_NETNS_OVERRIDE=1 "$BIN_DIR/host-local" <<<"$conf"
}
echo ">> host-local ADD for container demo-1 (dual-stack):"
run ADD demo-1; echo
echo ">> host-local ADD for container demo-2:"
run ADD demo-2; echo
echo ">> reservations on disk ($data/quickstart):"
ls "$data/quickstart"
run DEL demo-1; run DEL demo-2
echo ">> after DEL: $(find "$data/quickstart" -maxdepth 1 -name '10.*' -o -maxdepth 1 -name 'fd00*' | wc -l) reservations left"
