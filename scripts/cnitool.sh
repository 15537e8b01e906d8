#!/usr/bin/env bash
# Builds libcni's own CLI, `cnitool`, from Debian unstable's libcni (1.3.0 when written: spec 1.1.0: add, check, del, gc, status)
# and prints its path. Debian 12 only packages libcni 1.1 (spec <= 1.0.0), so this takes the
# upstream source package from Debian unstable through apt (deb-src, by package name) and builds
# it with Debian's Go 1.23 from bookworm-backports. Both come from the machine's own Debian
# mirror (read from its apt sources). The result is cached: later calls only print the path.
source "$(dirname "$0")/lib.sh"
need_root

CACHE="${CNITOOL_CACHE:-/var/cache/cni-rs/cnitool}"
if [ -x "$CACHE/cnitool" ]; then
    echo "$CACHE/cnitool"
    exit 0
fi

# The mirror this machine already uses (deb822 or one-line sources).
mirror="$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)"
[ -n "$mirror" ] || mirror="$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null)"
[ -n "$mirror" ] || { echo "error: no Debian mirror found in /etc/apt/sources.list*" >&2; exit 1; }
codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"

list=/etc/apt/sources.list.d/cni-rs-cnitool.list
want="deb $mirror $codename-backports main
deb-src $mirror sid main"
if [ "$(cat "$list" 2>/dev/null)" != "$want" ]; then
    echo "$want" >"$list"
fi
# Binary packages stay pinned to the release: unstable is only a source for the tarball.
cat >/etc/apt/preferences.d/cni-rs-cnitool <<EOF
Package: *
Pin: release a=$codename-backports
Pin-Priority: 100
EOF
echo ">> apt-get update (backports, unstable sources)" >&2
apt-get update -qq >&2
go=/usr/lib/go-1.23/bin/go
if [ ! -x "$go" ]; then
    echo ">> apt-get install golang-1.23-go (bookworm-backports)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -t "$codename-backports" golang-1.23-go >&2
fi

work="$(mktemp -d /tmp/cnitool-build.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# Only the upstream tarball is needed (apt checks it against the Sources index); some mirrors
# lack the Debian packaging files, which apt then reports as failed downloads.
(cd "$work" && apt-get source -qq --download-only "golang-github-appc-cni" >&2 2>/dev/null) || true
orig="$(ls "$work"/golang-github-appc-cni_*.orig.tar.* 2>/dev/null | head -1)"
[ -n "$orig" ] || { echo "error: apt-get source golang-github-appc-cni did not fetch libcni's source" >&2; exit 1; }
tar -xf "$orig" -C "$work"
src="$(find "$work" -maxdepth 2 -name go.mod -path '*cni*' -printf '%h\n' | head -1)"
# cnitool needs nothing beyond the standard library and libcni itself: build offline.
printf 'module github.com/containernetworking/cni\n\ngo 1.21\n' >"$src/go.mod"
rm -f "$src/go.sum"
mkdir -p "$CACHE"
(cd "$src" && GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOCACHE="$work/gocache" \
    CGO_ENABLED=0 "$go" build -o "$CACHE/cnitool" ./cnitool) >&2
echo "$CACHE/cnitool"
