#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer) of every parser of untrusted input: CNI
# configs and conflists, CNI_ARGS, prevResult, the shim's HTTP requests, bodies and -p plan, the
# agent's etcd values. Each target runs FUZZ_SECONDS (default 20) from its seed corpus
# (fuzz/corpus/<target>) plus every input that once crashed it (fuzz/regressions/<target>).
#
#   scripts/fuzz.sh                     # every target, 20 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh cni_result shim_http
#   FUZZ_SANITIZER=address scripts/fuzz.sh   # ASan (slower; the code under test is safe Rust)
#
# Works with a nightly toolchain (used when rustup has one) or with stable alone
# (RUSTC_BOOTSTRAP=1: cargo-fuzz needs -Z flags). New corpus entries go to a scratch dir, so
# the checkout stays clean; a crash leaves its input in $FUZZ_ARTIFACTS and fails the script.
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

secs="${FUZZ_SECONDS:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
target_dir="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/fuzz"
artifacts="${FUZZ_ARTIFACTS:-$target_dir/artifacts}"

if ! command -v c++ >/dev/null; then
    # libfuzzer-sys compiles libFuzzer (C++).
    echo ">> apt-get install g++ (libFuzzer is C++)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo ">> cargo install cargo-fuzz --locked"
    cargo install cargo-fuzz --locked
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    # Stable rustc accepts the -Z flags cargo-fuzz passes once told it may.
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi

echo ">> ${fuzz[*]} build (sanitizer: $sanitizer)"
"${fuzz[@]}" build -s "$sanitizer" --target-dir "$target_dir"

mkdir -p "$artifacts"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    dirs=("$scratch/$t")
    mkdir -p "$scratch/$t"
    for d in "fuzz/corpus/$t" "fuzz/regressions/$t"; do
        [ -d "$d" ] && dirs+=("$d")
    done
    echo ">> fuzz $t for ${secs}s"
    # libFuzzer writes new inputs to the first dir only (the scratch one). -timeout: a slow
    # input is a finding too (one CNI call must not take seconds to parse its config).
    if ! "${fuzz[@]}" run -s "$sanitizer" --target-dir "$target_dir" "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$artifacts/$t-" -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
        tail -n 60 "$scratch/$t.log" >&2
        echo "error: fuzz target $t failed; the input is in $artifacts/$t-*." >&2
        echo "  reproduce: ${fuzz[*]} run -s $sanitizer --target-dir $target_dir $t <input>" >&2
        exit 1
    fi
    grep -E '^(#[0-9]+\s+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$scratch/$t.log" | tr '\n' ' '
    echo
done
