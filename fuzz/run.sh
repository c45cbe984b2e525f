#!/usr/bin/env bash
# Builds the fuzz targets and runs each for the given number of seconds (default 60).
#
#   fuzz/run.sh [seconds] [target...]     targets: dns_parse decode_pair tcp_reassembly
#   fuzz/run.sh replay [target...]         runs every committed corpus input and artifact once
#
# Only a stable toolchain exists here, so RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags.
# Targets are built with --sanitizer none (no unsafe code on the fuzzed paths: see README.md)
# and with debug assertions and overflow checks on (-a). The fuzz crate is a member of the root
# workspace; its libFuzzer binaries need the `libfuzzer` feature. They land in the workspace's
# target directory ($CARGO_TARGET_DIR or target/), under x86_64-unknown-linux-gnu/release.
# New inputs go to fuzz/work/corpus/<target> (not committed), seeds are read from
# fuzz/corpus/<target>, crashes land in fuzz/artifacts/<target>, logs in fuzz/work/logs.
# Jobs run one after the other at nice 19 (the machine is shared). Extra libFuzzer options can
# be given in FUZZ_ARGS (e.g. FUZZ_ARGS=-max_len=4096).
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-60}
shift || true
replay=false
if [ "$secs" = replay ]; then
    replay=true
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(dns_parse decode_pair tcp_reassembly)
fi

# The recorder library needs its build packages (libelf, zlib, clang for libbpf-sys).
../scripts/setup-debian.sh
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
flags=(-s none -a --features libfuzzer)

nice -n 19 cargo fuzz build "${flags[@]}"
mkdir -p work/logs
if $replay; then
    for t in "${targets[@]}"; do
        echo "== $t: replaying corpus/$t and artifacts/$t"
        mkdir -p "artifacts/$t"
        status=0
        nice -n 19 cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "artifacts/$t" -- -runs=0 \
            >"work/logs/$t-replay.log" 2>&1 || status=$?
        grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|panicked at|Test unit written' "work/logs/$t-replay.log" || true
        if [ "$status" -ne 0 ]; then
            echo "!! $t replay failed: see fuzz/work/logs/$t-replay.log"
            exit 1
        fi
    done
    exit 0
fi
for t in "${targets[@]}"; do
    mkdir -p "work/corpus/$t" "corpus/$t" "artifacts/$t"
    echo "== $t: ${secs}s"
    status=0
    nice -n 19 cargo fuzz run "${flags[@]}" "$t" "work/corpus/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"work/logs/$t${LOG_SUFFIX:-}.log" 2>&1 || status=$?
    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)|cov: ' \
        "work/logs/$t${LOG_SUFFIX:-}.log" | tail -n 6 || true
    if [ "$status" -ne 0 ]; then
        echo "!! $t exited with $status: see fuzz/work/logs/$t${LOG_SUFFIX:-}.log and fuzz/artifacts/$t/"
        grep -E 'panicked at|^SUMMARY|Test unit written' "work/logs/$t${LOG_SUFFIX:-}.log" | head -n 5 || true
    fi
done
