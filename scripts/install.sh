#!/usr/bin/env bash
# Builds the suite in release mode and installs every binary where runtimes look for them:
# the CNI plugins into CNI_BIN_DIR (default /opt/cni/bin), cnm-shim into SHIM_DIR (default
# /usr/local/bin). Names match the reference plugins, so existing conflists keep working.
#
# Idempotent (an unchanged binary is left alone) and atomic: each binary is written to a
# temporary file in the target directory and renamed over the old one, so a runtime exec'ing
# it never sees a half-written file. A binary that was not built is skipped with a loud
# warning. Every installed file is recorded in $CNI_RS_STATE_DIR/installed (default
# /var/lib/cni-rs) for scripts/uninstall.sh.
#
# CNI_RS_PREBUILT=<dir> installs the binaries found in <dir> instead of building.
source "$(dirname "$0")/lib.sh"
need_root
BIN_DIR="${CNI_BIN_DIR:-/opt/cni/bin}"
SHIM_DIR="${SHIM_DIR:-/usr/local/bin}"
if [ -n "${CNI_RS_PREBUILT:-}" ]; then
    out="$CNI_RS_PREBUILT"
else
    out="$(build_release)"
fi

missing=()
# install_one <src> <dst dir> <name>
install_one() {
    local src="$1" dir="$2" name="$3" dst tmp
    dst="$dir/$name"
    if [ ! -x "$src" ]; then
        missing+=("$name")
        echo "WARNING: $name was not built ($src missing): NOT installed; a network config using it will fail" >&2
        return
    fi
    mkdir -p "$dir"
    if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
        echo "unchanged $dst"
    else
        tmp="$(mktemp "$dir/.$name.XXXXXX")"
        install -m 0755 "$src" "$tmp"
        mv -f "$tmp" "$dst"   # rename(2): atomic for a concurrent exec
        echo "installed $dst"
    fi
    record_installed "$dst"
}

for b in "${SUITE_PLUGINS[@]}"; do
    install_one "$out/$b" "$BIN_DIR" "$b"
done
# The Docker driver daemon (see README "Docker: cnm-shim").
install_one "$out/cnm-shim" "$SHIM_DIR" cnm-shim

if [ "${#missing[@]}" -gt 0 ]; then
    echo "WARNING: not installed (not built): ${missing[*]}" >&2
fi
