#!/usr/bin/env bash
# Builds the plugins in release mode and installs them where runtimes look for them
# (CNI_BIN_DIR, default /opt/cni/bin). Names match the reference plugins, so an existing
# conflist keeps working.
source "$(dirname "$0")/lib.sh"
need_root
BIN_DIR="${CNI_BIN_DIR:-/opt/cni/bin}"
out="$(build_release)"
mkdir -p "$BIN_DIR"
for b in bridge host-local loopback tuning; do
    [ -x "$out/$b" ] || continue
    install -m 0755 "$out/$b" "$BIN_DIR/$b.new"
    mv -f "$BIN_DIR/$b.new" "$BIN_DIR/$b"   # atomic: a runtime never execs a half-written file
    echo "installed $BIN_DIR/$b"
done
# The Docker driver daemon (see README "Docker: cnm-shim").
SHIM_DIR="${SHIM_DIR:-/usr/local/bin}"
if [ -x "$out/cnm-shim" ]; then
    install -m 0755 "$out/cnm-shim" "$SHIM_DIR/cnm-shim.new"
    mv -f "$SHIM_DIR/cnm-shim.new" "$SHIM_DIR/cnm-shim"
    echo "installed $SHIM_DIR/cnm-shim"
fi
