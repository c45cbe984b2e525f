#!/usr/bin/env bash
# dnsledger benchmark suite (issue 5): one command, results in bench/RESULTS.md.
#
#   sudo bench/run.sh            full run (release build, ~30 min on 2 cores; P5 data sets cached)
#   sudo bench/run.sh --smoke    seconds-long run of every arm with debug binaries (CI)
#
# Options after the mode are passed to bench/bench.py (see `bench/bench.py --help`), e.g.
# `--reps 3`, `--only p1,p3`, `--p5-max-rows 5000000`, `--keep`.
# Environment: DNSLEDGER_BIN_DIR (binaries: dnsledger, dnsql, examples/bench_gen; default
# target/release for the full run, target/debug for --smoke), CARGO_TARGET_DIR (used to find
# and build the release binaries), BENCH_WORK (scratch, default /var/tmp), BENCH_CACHE
# (generated P5 data sets, default /var/tmp/dnsledger-bench-cache), BENCH_NO_BUILD=1,
# BENCH_NO_INSTALL=1.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
if [[ "${1:-}" == "--smoke" ]]; then smoke=1; fi

if [[ $EUID -ne 0 ]]; then
  echo "error: the benchmarks load BPF programs and run tcpdump: run as root" >&2
  exit 2
fi

# Tools: Debian packages and DuckDB from PyPI, installed only when missing.
if [[ "${BENCH_NO_INSTALL:-0}" != 1 ]]; then
  need=()
  for pair in dnsperf:dnsperf unbound:unbound tcpdump:tcpdump iperf3:iperf3 zstd:zstd tshark:tshark dig:dnsutils; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair##*:}")
  done
  if ((${#need[@]})); then
    echo "bench: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  # DuckDB from PyPI into the project's .venv (made from Debian's python3; PEP 668 forbids
  # installing into the system Python).
  scripts/setup-debian.sh --venv
fi

if ((smoke)); then
  bin=${DNSLEDGER_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
  if [[ "${BENCH_NO_BUILD:-0}" != 1 && ! -x "$bin/examples/bench_gen" ]]; then
    cargo build -q -p dnsledger-recorder -p dnsledger-query --bins --examples
  fi
else
  bin=${DNSLEDGER_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
  if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
    cargo build --release -q -p dnsledger-recorder -p dnsledger-query --bins --examples
  fi
fi
for b in dnsledger dnsql examples/bench_gen; do
  [[ -x "$bin/$b" ]] || { echo "error: $bin/$b not found (set DNSLEDGER_BIN_DIR)" >&2; exit 2; }
done

# The project's .venv python by full path (DuckDB lives there; a pyenv shim would add
# bash/readlink processes to every measurement).
py=$PWD/.venv/bin/python
"$py" -c 'import duckdb' 2>/dev/null || {
  echo "error: $py cannot import duckdb" >&2
  echo "hint: run scripts/setup-debian.sh --venv (or drop BENCH_NO_INSTALL=1)" >&2
  exit 2
}
exec "$py" bench/bench.py --bin-dir "$bin" "$@"
