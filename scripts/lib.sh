# Shared shell helpers for the scripts in this directory.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

# System packages the project needs on a fresh Debian machine (tests, reference peer, e2e).
SYSTEM_PACKAGES=(containernetworking-plugins nftables iptables iproute2 busybox-static jq
                 docker.io containerd procps util-linux systemd curl openssl
                 etcd-server etcd-client protobuf-compiler libprotobuf-dev iperf3)

# Only the tests need these (another CNI caller to run against): test.sh installs them too.
TEST_PACKAGES=(podman)

# Every CNI plugin binary of the suite (installed by install.sh into /opt/cni/bin).
SUITE_PLUGINS=(loopback bridge host-local portmap firewall tuning)

# Where install.sh and quickstart.sh record what they installed (read by uninstall.sh).
CNI_RS_STATE_DIR="${CNI_RS_STATE_DIR:-/var/lib/cni-rs}"

# record_installed <path>: adds an installed file to $CNI_RS_STATE_DIR/installed (once).
record_installed() {
    mkdir -p "$CNI_RS_STATE_DIR"
    touch "$CNI_RS_STATE_DIR/installed"
    grep -qxF "$1" "$CNI_RS_STATE_DIR/installed" || echo "$1" >>"$CNI_RS_STATE_DIR/installed"
}

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "error: $0 must run as root (it creates network namespaces, bridges and nftables state)" >&2
        exit 1
    fi
}

# Installs missing Debian packages (idempotent, quiet when everything is there).
# Installs SYSTEM_PACKAGES and the packages named as arguments, those missing only.
install_system_packages() {
    local missing=()
    for p in "${SYSTEM_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo ">> apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# The triple of the machine we build on (x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu...).
host_triple() {
    rustc -vV | sed -n 's/^host: //p'
}

# Where build_release puts the binaries (all of them, plugins and daemons, in one directory).
release_dir() {
    echo "${CARGO_TARGET_DIR:-$REPO_ROOT/target}/cni-release"
}

# The plugins a runtime execs once per CNI call (install.sh installs SUITE_PLUGINS; `cluster`
# is exec'd the same way on cluster networks).
EXEC_PLUGINS=("${SUITE_PLUGINS[@]}" cluster)

# The musl twin of the host triple (x86_64-unknown-linux-gnu -> x86_64-unknown-linux-musl).
musl_triple() {
    host_triple | sed 's/-gnu[a-z0-9]*$/-musl/'
}

# Whether cargo can build for musl here: adds the target through rustup when it is missing
# (one download of its standard library). False when that is impossible (no rustup, offline).
have_musl_target() {
    local t
    t="$(musl_triple)"
    case "$t" in *-musl) ;; *) return 1 ;; esac
    rustc --print target-libdir --target "$t" 2>/dev/null | xargs -r test -d && return 0
    command -v rustup >/dev/null || return 1
    echo ">> rustup target add $t (the plugins are linked against musl, see README)" >&2
    timeout 300 rustup target add "$t" >&2 || return 1
}

# RUSTFLAGS of release builds. Not position-independent (like the reference's and Docker's
# static builds): a static-pie relocates itself at every start, ~4,000 pointers copied into ~15
# private pages, ~0.05 ms of each call. Stack, heap and mmap stay randomized. Builds name
# their target triple explicitly, which keeps both flags off build scripts and proc-macros
# (they must stay dynamic).
release_rustflags() {
    echo "${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static"
}

# The triple the exec'd plugins are built for: musl when cargo can build for it (see
# have_musl_target; CNI_RS_LIBC=glibc forces the host's glibc). glibc's static start-up
# probes the CPU with ~50 `cpuid` instructions, each a trap to the hypervisor on a VM: ~0.3 ms
# of every plugin call here. musl's start-up probes nothing.
plugin_triple() {
    if [ "${CNI_RS_LIBC:-musl}" = musl ] && have_musl_target; then
        musl_triple
    else
        echo "note: plugins linked against glibc (musl target unavailable or CNI_RS_LIBC=glibc): each call starts ~0.3 ms slower on a VM" >&2
        host_triple
    fi
}

# copy_executables <src dir> <dst dir>: copies the executable files of <src dir> (not cargo's
# .d files or directories) into <dst dir>.
copy_executables() {
    local f
    mkdir -p "$2"
    for f in "$1"/*; do
        [ -f "$f" ] && [ -x "$f" ] && cp -p "$f" "$2/"
    done
    return 0
}

# build_plugins <dir>: builds the exec'd plugins (EXEC_PLUGINS) in release mode, statically
# linked, and copies them into <dir>.
build_plugins() {
    local out="$1" triple p bins=()
    triple="$(plugin_triple)"
    for p in "${EXEC_PLUGINS[@]}"; do bins+=(--bin "$p"); done
    (cd "$REPO_ROOT" && RUSTFLAGS="$(release_rustflags)" \
        cargo build --release -q --target "$triple" "${bins[@]}") >&2
    mkdir -p "$out"
    for p in "${EXEC_PLUGINS[@]}"; do
        cp -p "${CARGO_TARGET_DIR:-$REPO_ROOT/target}/$triple/release/$p" "$out/"
    done
}

# Builds every binary in release mode, statically linked, and prints the directory holding
# them (release_dir): the daemons and tools against the host's glibc (its allocator and
# resolver), the exec'd plugins by build_plugins. Static: no dynamic loader at each exec (~0.3
# ms) and no C library needed at run time.
# CNI_RS_PREBUILT=DIR skips the build and uses the binaries already in DIR (e.g. to run several
# benchmark scripts against one build).
build_release() {
    if [ -n "${CNI_RS_PREBUILT:-}" ]; then
        echo "$CNI_RS_PREBUILT"
        return
    fi
    local gnu out p
    gnu="$(host_triple)"
    local skip=()
    for p in "${EXEC_PLUGINS[@]}"; do skip+=(--exclude "$p"); done
    (cd "$REPO_ROOT" && RUSTFLAGS="$(release_rustflags)" \
        cargo build --release --workspace "${skip[@]}" --bins -q --target "$gnu") >&2
    out="$(release_dir)"
    rm -rf "$out"
    copy_executables "${CARGO_TARGET_DIR:-$REPO_ROOT/target}/$gnu/release" "$out"
    build_plugins "$out"
    check_release_binaries "$out" || return 1
    echo "$out"
}

# Environment switches only the tests use (cnm-shim's and host-local's crash points, bridge's
# synchronous link delete). They are compiled into debug builds only
# (#[cfg(debug_assertions)]): an installed binary must not be steerable by them.
TEST_ONLY_SWITCHES=(CNM_SHIM_CRASH_AT CNI_HOST_LOCAL_CRASH_AT CNI_BRIDGE_SYNC_DELETE)

# check_release_binaries <dir>: fails, naming binary and switch, if an executable in <dir>
# contains the name of a test-only switch.
check_release_binaries() {
    local f s bad=0
    for f in "$1"/*; do
        [ -f "$f" ] && [ -x "$f" ] || continue
        for s in "${TEST_ONLY_SWITCHES[@]}"; do
            if grep -qaF "$s" "$f"; then
                echo "error: $f contains the test-only switch $s; gate it with #[cfg(debug_assertions)] so release builds leave it out" >&2
                bad=1
            fi
        done
    done
    return "$bad"
}
