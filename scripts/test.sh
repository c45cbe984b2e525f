#!/usr/bin/env bash
# The whole test suite, as CI runs it: packages, format, lints, every test (BPF tests included,
# as root), and a check that no BPF test was skipped or left out.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-debian.sh --test

if [ "$(id -u)" -ne 0 ]; then
  echo "error: the test suite loads real BPF programs and must run as root" >&2
  echo "hint: sudo $0" >&2
  exit 1
fi

# dnsql must build without clang or libbpf: no libbpf crate in its dependency tree.
if cargo tree -p dnsledger-query --edges normal,build | grep -qi libbpf; then
  echo "error: dnsledger-query depends on libbpf" >&2
  exit 1
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The libFuzzer binaries of fuzz/ (feature `libfuzzer`, left out of the workspace builds above)
# must keep compiling on stable; running them takes cargo-fuzz (fuzz/run.sh). libfuzzer-sys
# builds libFuzzer's C++: with clang++ (installed for the BPF programs) where there is no c++.
if command -v c++ >/dev/null; then
  cargo clippy -p dnsledger-fuzz --features libfuzzer --bins -- -D warnings
else
  CXX=clang++ cargo clippy -p dnsledger-fuzz --features libfuzzer --bins -- -D warnings
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --test-threads: BPF tests serialise on a lock anyway; two threads keep the rest moving.
cargo test --workspace -- --test-threads 2 2>&1 | tee "$log"

# Every BPF test (named bpf_*) that exists must have run and passed: none skipped, none ignored.
expected=$(cargo test -p dnsledger-tests --test e2e -- --list 2>/dev/null | grep -cE '^([a-z_]+::)*bpf_[a-z0-9_]+: test$' || true)
passed=$(grep -cE '^test ([a-z_]+::)*bpf_[a-z0-9_]+ \.\.\. ok$' "$log" || true)
if [ "$expected" -eq 0 ] || [ "$passed" -ne "$expected" ]; then
  echo "error: $passed of $expected BPF tests passed; BPF tests must all run" >&2
  exit 1
fi
if grep -qE '^test ([a-z_]+::)*bpf_.* \.\.\. ignored' "$log"; then
  echo "error: a BPF test was ignored" >&2
  exit 1
fi
# The benchmark suite in its seconds-long smoke mode, on the debug binaries just built, so the
# scripts cannot rot (the full run is `sudo bench/run.sh`, see bench/README.md).
bench/run.sh --smoke
# The Debian package: built (profile deb-ci), lintian, installed with dpkg -i, checked, upgraded,
# removed and purged on this machine; it leaves no package, account or directory behind.
./scripts/test-deb.sh
echo "all tests passed, including $passed BPF tests; benchmark smoke run and package test passed"
