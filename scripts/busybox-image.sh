#!/usr/bin/env bash
# Builds a tiny busybox image archive (docker-archive format, importable by both
# `ctr image import` and `docker load`) from Debian's busybox-static: nothing is pulled.
# Usage: busybox-image.sh OUT.tar [TAG]
source "$(dirname "$0")/lib.sh"
out="$1"; tag="${2:-cnirs/busybox:latest}"
work="$(mktemp -d /tmp/cnirs-img.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp" "$work/img"
cp /bin/busybox "$work/rootfs/bin/busybox"
for app in sh ping ip ifconfig sleep cat ls wget nc hostname route; do
    ln -s busybox "$work/rootfs/bin/$app"
done
tar -C "$work/rootfs" --numeric-owner --owner=0 --group=0 -cf "$work/img/layer.tar" .
diff_id="sha256:$(sha256sum "$work/img/layer.tar" | cut -d' ' -f1)"
cat > "$work/img/config.json" <<JSON
{"architecture":"$(dpkg --print-architecture)","os":"linux","config":{"Cmd":["sh"],"Env":["PATH=/bin"]},
 "rootfs":{"type":"layers","diff_ids":["$diff_id"]}}
JSON
cat > "$work/img/manifest.json" <<JSON
[{"Config":"config.json","RepoTags":["$tag"],"Layers":["layer.tar"]}]
JSON
tar -C "$work/img" -cf "$out" manifest.json config.json layer.tar
