#!/usr/bin/env bash
# One command builds the Debian package: target/debian/dnsledger_<version>-1_<arch>.deb
# (dnsledger and dnsql in /usr/bin, the units of dist/, /etc/dnsledger/, man pages and
# completions), plus its debug symbols as dnsledger-dbgsym_<version>-1_<arch>.ddeb.
#
#   scripts/build-deb.sh [--profile PROFILE]
#
# PROFILE: release (default: the package for hosts; ~19 min from clean on 2 cores) or deb-ci
# (release with opt-level 1 and no debug info: what the CI package test builds, see Cargo.toml).
# Installs what it needs first (scripts/setup-debian.sh --deb: cargo-deb, pinned below).
# Prints the package's path on stdout, everything else on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) [ $# -ge 2 ] || { echo "error: --profile needs a value" >&2; exit 2; }
               profile=$2; shift 2 ;;
    --profile=*) profile=${1#--profile=}; shift ;;
    *) echo "error: unknown argument '$1' (expected --profile PROFILE)" >&2; exit 2 ;;
  esac
done
if [ "$profile" = dev ] || [ "$profile" = debug ]; then
  echo "error: cargo-deb does not package the dev profile" >&2
  echo "hint: --profile release, or --profile deb-ci for a quicker build" >&2
  exit 2
fi

./scripts/setup-debian.sh --deb >&2

start=$(date +%s)
# Both binaries in one cargo invocation: shared dependencies are built once.
cargo build --locked --profile "$profile" -p dnsledger-recorder -p dnsledger-query --bins >&2
built=$(date +%s)
bin_dir="${CARGO_TARGET_DIR:-$root/target}/$profile"

# Man pages and completions, from the clap definitions of the binaries being packaged.
docs="$root/target/deb-docs"
rm -rf "$docs"
mkdir -p "$docs"
"$bin_dir/dnsledger" generate-docs "$docs/dnsledger" >/dev/null
"$bin_dir/dnsql" generate-docs "$docs/dnsql" >/dev/null

# The Debian changelog (Debian requires one), generated so it always names the version built.
version=$("$bin_dir/dnsledger" --version | awk '{print $2}')
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
when=$(git log -1 --format=%cD 2>/dev/null || date -R)
cat > "$docs/changelog" <<CHANGELOG
dnsledger ($version-1) unstable; urgency=medium

  * dnsledger $version, built from commit $commit.

 -- dnsledger developers <dnsledger@example.invalid>  $when
CHANGELOG

if [ "$profile" = release ]; then
  debug=(--dbgsym)          # release keeps line tables (Cargo.toml): into the .ddeb
else
  # A test package: quicker compression (xz at its default level took 4.6 min for deb-ci's
  # 130 MB of binaries on the shared 2 cores).
  debug=(--strip --fast)
fi
# cargo deb prints the package's path on stdout (its progress and warnings go to stderr; the
# warning that the generated docs under target/ are not Cargo outputs is expected).
out=$(cargo deb --no-build --locked -p dnsledger-recorder --profile "$profile" "${debug[@]}" \
  --output "$root/target/debian" \
  2> >(grep -v "Only source paths starting with exactly 'target/release/'" >&2) | tail -n 1)
end=$(date +%s)
echo "built $out (profile $profile: cargo build $((built - start)) s, packaging $((end - built)) s)" >&2
echo "$out"
