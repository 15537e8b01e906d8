#!/usr/bin/env bash
# Removes what scripts/install.sh and scripts/quickstart.sh installed, and the state the suite
# left on this host, after printing all of it:
#   - the binaries (as recorded in $CNI_RS_STATE_DIR/installed),
#   - our network configs in CNI_CONF_DIR (recorded ones, and files identical to one of conf/),
#   - the cnm-shim systemd units in SYSTEMD_DIR (stopped and disabled first),
#   - the bridges named by our network configs, the nftables tables `inet cni_rs`,
#     `bridge cni_rs` and every `cni_rs_*` / `cnm_*` table,
#   - the host-local stores of our networks (and our index files beside them),
#   - tuning's saved state (TUNING_DIR) and cnm-shim's state dir (CNM_STATE_DIR),
#   - for the installed cnm-shim (SHIM_DIR=/usr/local/bin): the Docker networks of its driver
#     (`cnm`, removed while dockerd still runs) and the running cnm-shim processes.
# Usage: uninstall.sh [--yes]   (without --yes it asks; without a terminal it refuses)
# Every location can be overridden by the environment variable named above (tests do).
source "$(dirname "$0")/lib.sh"
need_root
yes=0
for a in "$@"; do
    case "$a" in
    --yes | -y) yes=1 ;;
    *) echo "usage: $0 [--yes]" >&2; exit 2 ;;
    esac
done
BIN_DIR="${CNI_BIN_DIR:-/opt/cni/bin}"
SHIM_DIR="${SHIM_DIR:-/usr/local/bin}"
CONF_DIR="${CNI_CONF_DIR:-/etc/cni/net.d}"
SYSTEMD_DIR="${SYSTEMD_DIR:-/etc/systemd/system}"
TUNING_DIR="${TUNING_DIR:-/run/cni/tuning}"
CNM_STATE_DIR="${CNM_STATE_DIR:-/var/lib/cnm-shim}"
MANIFEST="$CNI_RS_STATE_DIR/installed"

files=() confs=() units=() bridges=() tables=() dirs=()
add_unique() { # add_unique <array name> <value>
    local -n arr="$1"
    local x
    for x in "${arr[@]}"; do [ "$x" = "$2" ] && return; done
    arr+=("$2")
}

# Recorded files: binaries and configs.
if [ -f "$MANIFEST" ]; then
    while IFS= read -r f; do
        [ -e "$f" ] || continue
        case "$f" in
        *.conflist | *.conf | *.json) add_unique confs "$f" ;;
        *) add_unique files "$f" ;;
        esac
    done <"$MANIFEST"
fi
# Configs installed by hand from conf/ (identical content).
for f in "$CONF_DIR"/*; do
    [ -f "$f" ] || continue
    for ours in "$REPO_ROOT"/conf/*.conflist "$REPO_ROOT"/conf/*.conf; do
        [ -f "$ours" ] && cmp -s "$f" "$ours" && add_unique confs "$f"
    done
done
for u in cnm-shim.socket cnm-shim.service; do
    [ -f "$SYSTEMD_DIR/$u" ] && add_unique units "$SYSTEMD_DIR/$u"
done
# What our configs name: bridges and host-local stores.
for c in "${confs[@]}"; do
    name="$(jq -r '.name // empty' "$c")"
    while IFS=$'\t' read -r type br ipam datadir; do
        [ "$type" = bridge ] && add_unique bridges "${br:-cni0}"
        if [ "$ipam" = host-local ] && [ -n "$name" ]; then
            d="${datadir:-/var/lib/cni/networks}"
            for p in "$d/$name" "$d/.$name.rsindex" "$d/.$name.rspool" "$d/.$name.rsboot" \
                "$d/.$name.rsboot.tmp"; do
                [ -e "$p" ] && add_unique dirs "$p"
            done
        fi
    done < <(jq -r '(if .plugins then .plugins[] else . end)
        | [.type, (.bridge // ""), (.ipam.type // ""), (.ipam.dataDir // "")] | @tsv' "$c")
done
existing_bridges=()
for b in "${bridges[@]}"; do
    ip link show dev "$b" >/dev/null 2>&1 && existing_bridges+=("$b")
done
if command -v nft >/dev/null; then
    while read -r _ fam tname; do
        case "$tname" in
        cni_rs | cni_rs_* | cnm_*) add_unique tables "$fam $tname" ;;
        esac
    done < <(nft list tables 2>/dev/null)
fi
for d in "$TUNING_DIR" "$CNM_STATE_DIR" "$CNI_RS_STATE_DIR"; do
    [ -e "$d" ] && add_unique dirs "$d"
done
# The installed shim's Docker networks and processes (not for a test's private SHIM_DIR).
dnets=() shims=()
if [ "$SHIM_DIR" = /usr/local/bin ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        while read -r n; do [ -n "$n" ] && dnets+=("$n"); done \
            < <(docker network ls --filter driver=cnm --format '{{.Name}}' 2>/dev/null)
    fi
    for pid in $(pgrep -x cnm-shim 2>/dev/null); do
        exe="$(readlink "/proc/$pid/exe" 2>/dev/null)"
        [ "${exe% (deleted)}" = "$SHIM_DIR/cnm-shim" ] && shims+=("$pid")
    done
fi

echo "scripts/uninstall.sh will remove:"
show() { local label="$1"; shift; [ "$#" -gt 0 ] && printf '  %s:\n' "$label" && printf '    %s\n' "$@"; return 0; }
show "binaries" "${files[@]}"
show "network configs" "${confs[@]}"
show "systemd units (stopped and disabled first)" "${units[@]}"
show "bridges" "${existing_bridges[@]}"
show "nftables tables" "${tables[@]}"
show "state" "${dirs[@]}"
show "Docker networks of driver cnm" "${dnets[@]}"
show "running cnm-shim processes (pid)" "${shims[@]}"
total=$(( ${#files[@]} + ${#confs[@]} + ${#units[@]} + ${#existing_bridges[@]} + ${#tables[@]} + ${#dirs[@]} + ${#dnets[@]} + ${#shims[@]} ))
if [ "$total" = 0 ]; then
    echo "  nothing: the suite is not installed"
    exit 0
fi
if [ "$yes" != 1 ]; then
    if [ ! -t 0 ]; then
        echo "error: refusing without a terminal to confirm; rerun with --yes" >&2
        exit 1
    fi
    read -r -p "Proceed? [y/N] " answer
    case "$answer" in y | Y | yes) ;; *) echo "nothing removed"; exit 1 ;; esac
fi

# Docker networks first, while the shim still serves their DeleteNetwork.
for n in "${dnets[@]}"; do
    if docker network rm "$n" >/dev/null; then echo "removed Docker network $n"; else
        echo "warning: Docker network $n not removed (containers still attached? docker network inspect $n)" >&2
    fi
done
if [ "${#units[@]}" -gt 0 ] && command -v systemctl >/dev/null && [ "$SYSTEMD_DIR" = /etc/systemd/system ]; then
    systemctl disable --now cnm-shim.socket cnm-shim.service >/dev/null 2>&1 || true
fi
for pid in "${shims[@]}"; do kill "$pid" 2>/dev/null && echo "stopped cnm-shim (pid $pid)"; done
for f in "${files[@]}" "${confs[@]}" "${units[@]}"; do rm -f -- "$f" && echo "removed $f"; done
if [ "${#units[@]}" -gt 0 ] && command -v systemctl >/dev/null && [ "$SYSTEMD_DIR" = /etc/systemd/system ]; then
    systemctl daemon-reload || true
fi
for b in "${existing_bridges[@]}"; do ip link del dev "$b" && echo "removed bridge $b"; done
for t in "${tables[@]}"; do
    # shellcheck disable=SC2086 # "family name"
    nft delete table $t && echo "removed nftables table $t"
done
for d in "${dirs[@]}"; do rm -rf -- "$d" && echo "removed $d"; done
echo "done"
