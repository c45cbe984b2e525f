#!/usr/bin/env bash
# dnsledger benchmark suite (issue 5): one command, results in bench/RESULTS.md.
#
#   sudo bench/run.sh            full run (release build, then ~50 min on 2 cores; data sets cached)
#   sudo bench/run.sh --smoke    seconds-long run of every arm with debug binaries (CI)
#
# Options after the mode are passed to bench/bench.py (see `bench/bench.py --help`), e.g.
# `--reps 3`, `--only p1,p3`, `--p5-max-rows 5000000`, `--keep`.
# Environment: DNSLEDGER_BIN_DIR (binaries: dnsledger, dnsql, examples/bench_gen; default
# target/release for the full run, target/debug for --smoke), CARGO_TARGET_DIR (used to find
# and build the release binaries), BENCH_WORK (scratch, default /var/tmp), BENCH_CACHE
# (generated P5 data sets, default /var/tmp/dnsledger-bench-cache), BENCH_NO_BUILD=1,
# BENCH_NO_INSTALL=1, BENCH_FLEET=0 (skip the fleet-scale part, bench/fleet.py),
# BENCH_FLEET_ONLY=1 (only the fleet-scale part; the full run records live tunnels for it with
# bench/tunnels.sh first, unless BENCH_TUNNELS names a directory recorded earlier).
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
  # iodine and dns2tcp: real DNS tunnels recorded live for the fleet-scale part (bench/tunnels.sh).
  for pair in dnsperf:dnsperf unbound:unbound tcpdump:tcpdump iperf3:iperf3 zstd:zstd tshark:tshark dig:dnsutils \
      iodined:iodine dns2tcpd:dns2tcp dnsmasq:dnsmasq-base; do
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
{ "$py" -c 'import duckdb' 2>/dev/null && [[ -x .venv/bin/duckdb ]]; } || {
  echo "error: $py cannot import duckdb, or the DuckDB CLI .venv/bin/duckdb is missing" >&2
  echo "hint: run scripts/setup-debian.sh --venv (or drop BENCH_NO_INSTALL=1)" >&2
  exit 2
}
status=0
if [[ "${BENCH_FLEET_ONLY:-0}" != 1 ]]; then
  "$py" bench/bench.py --bin-dir "$bin" "$@" || status=$?
fi
if [[ "${BENCH_FLEET:-1}" != 0 ]]; then
  if ((smoke)); then
    # Tiny sets; no live tunnels (they need tun devices and network namespaces, and ~1 min).
    "$py" bench/fleet.py --smoke --bin-dir "$bin" || status=$?
  else
    tunnels=${BENCH_TUNNELS:-}
    if [[ -z "$tunnels" ]]; then
      tunnels=${BENCH_WORK:-/var/tmp}/dnsledger-tunnels
      rm -rf "$tunnels"
      bench/tunnels.sh "$tunnels" "$bin" || { echo "bench: recording the live tunnels failed" >&2; status=1; }
    fi
    "$py" bench/fleet.py --bin-dir "$bin" --tunnels "$tunnels" || status=$?
    # RESULTS.md carries the fleet section (bench/FLEET.md): re-render it, or, when its .json is
    # of an older method that --render refuses, replace only the fleet and UNMET parts.
    if [[ -f bench/RESULTS.json ]]; then
      "$py" bench/bench.py --render bench/RESULTS.json || "$py" bench/bench.py --splice bench/RESULTS.md || status=1
    fi
  fi
fi
exit "$status"
