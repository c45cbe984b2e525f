#!/usr/bin/env bash
# The Debian package as an operator meets it, on this machine (root, Debian 12; called by
# scripts/test.sh, runnable alone):
#   build it (scripts/build-deb.sh --profile deb-ci, or --deb FILE to test a package already
#   built), lintian, ldd of the binaries, dpkg -i, then check the files and their modes, the
#   conffiles, the account, the data directory, the units (systemd-analyze verify, enabled or
#   not), `dnsledger check` from /usr/bin, the recorder and the prune run as their units run them,
#   dnsql on the result, `man`, the completions; an upgrade keeps the config and the data;
#   dpkg -r and dpkg -P leave only what the README says is kept (recorded data, after purge;
#   DNSLEDGER_PURGE_DATA=yes removes it too).
# Refuses to run where dnsledger is already installed or its account or directories exist,
# and leaves none of them behind, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

profile=deb-ci
deb=
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --deb) deb=$2; shift 2 ;;
    *) echo "error: unknown argument '$1' (expected --profile PROFILE or --deb FILE)" >&2; exit 2 ;;
  esac
done

fail() {
  echo "error: package test: $*" >&2
  exit 1
}
step() { echo "== $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "error: the package test installs the package and must run as root" >&2
  echo "hint: sudo $0" >&2
  exit 1
fi
if dpkg-query -W -f='${Status}' dnsledger 2>/dev/null | grep -q "installed\|config-files"; then
  echo "error: the dnsledger package is already on this machine; the test installs and purges it" >&2
  echo "hint: dpkg -P dnsledger (keeps recorded data), then run the test again" >&2
  exit 1
fi
for leftover in /var/lib/dnsledger /etc/dnsledger; do
  if [ -e "$leftover" ]; then
    echo "error: $leftover exists; the package test would install over it and remove it" >&2
    echo "hint: move it away (e.g. data recorded by scripts/record.sh), then run the test again" >&2
    exit 1
  fi
done
if getent passwd dnsledger >/dev/null || getent group dnsledger >/dev/null; then
  echo "error: a dnsledger account or group exists; the package creates and removes its own" >&2
  echo "hint: userdel dnsledger; groupdel dnsledger" >&2
  exit 1
fi
if grep -qsE '^path-exclude[= ]/usr/share/man' /etc/dpkg/dpkg.cfg.d/*; then
  echo "error: dpkg is configured not to install man pages (/etc/dpkg/dpkg.cfg.d)" >&2
  echo "hint: remove that path-exclude line; the test checks the installed man pages" >&2
  exit 1
fi

work=$(mktemp -d)
chmod 755 "$work"
recorder_pid=
cleanup() {
  local rc=$?
  if [ -n "$recorder_pid" ] && kill -0 "$recorder_pid" 2>/dev/null; then
    kill -TERM "$recorder_pid" 2>/dev/null || true
    wait "$recorder_pid" 2>/dev/null || true
  fi
  if dpkg-query -W -f='${Status}' dnsledger 2>/dev/null | grep -q "installed\|config-files"; then
    DNSLEDGER_PURGE_DATA=yes dpkg -P dnsledger >/dev/null 2>&1 || true
  fi
  rm -rf /var/lib/dnsledger "$work"
  exit "$rc"
}
trap cleanup EXIT

t0=$(date +%s)
if [ -z "$deb" ]; then
  step "build the package (profile $profile)"
  deb=$(./scripts/build-deb.sh --profile "$profile")
  bin_dir="${CARGO_TARGET_DIR:-$root/target}/$profile"
else
  bin_dir=
fi
t_built=$(date +%s)
[ -f "$deb" ] || fail "no package at '$deb'"
echo "package: $deb ($(du -k "$deb" | cut -f1) KiB)" >&2

step "lintian"
# Every tag down to info must be overridden, with its reason, in dist/debian/lintian-overrides
# (installed as usr/share/lintian/overrides/dnsledger). Run unprivileged, as lintian asks.
cp "$deb" "$work/"
chmod 644 "$work/$(basename "$deb")"
runuser -u nobody -- env HOME=/tmp lintian --fail-on error,warning,info --info \
  --display-level ">=pedantic" "$work/$(basename "$deb")" >&2 \
  || fail "lintian reports tags not overridden in dist/debian/lintian-overrides (above)"

# Nothing at run time beyond glibc: libelf and zlib are linked in (libbpf-rs `static`). Allowed:
# the vDSO, the loader, libc; libm (glibc's math library, in the libc6 package: Rust's f64
# methods call it); libgcc_s (Rust's standard library unwinds panics with it on this target;
# only a fully static glibc would avoid it, and that breaks getpwnam for --user and getaddrinfo
# for lake endpoints; libc6 itself depends on libgcc-s1, so every glibc system has it).
check_ldd() {
  local bin=$1 libs
  libs=$(ldd "$bin" | awk '{print $1}' | sort)
  local unexpected
  unexpected=$(grep -vxE 'linux-vdso\.so\.1|/lib64/ld-linux-x86-64\.so\.2|libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1' <<<"$libs" || true)
  [ -z "$unexpected" ] || fail "$bin links more than glibc: $(tr '\n' ' ' <<<"$unexpected")"
  echo "ldd $bin: $(tr '\n' ' ' <<<"$libs")" >&2
}

state_snapshot() {
  # Every file and directory outside the package manager's own state and caches.
  find /etc /usr /opt /var/lib /var/log /srv -xdev \
    \( -path /var/lib/dpkg -o -path /var/lib/apt \) -prune -o -print 2>/dev/null | sort
}
grep_accounts() {
  grep -h '^dnsledger:' /etc/passwd /etc/group /etc/shadow /etc/gshadow 2>/dev/null || true
}

install_pkg() {
  dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i failed"; }
}

mode_owner() { stat -c '%a %U:%G' "$1"; }
expect_mode() {
  local path=$1 want=$2 got
  [ -e "$path" ] || fail "$path is missing"
  got=$(mode_owner "$path")
  [ "$got" = "$want" ] || fail "$path is '$got', expected '$want'"
}

# A few real DNS transactions in the data directory, written as the account would.
import_sample() {
  cp testdata/pcap/dns-udp-google.com-a-aaaa-mx.pcap "$work/sample.pcap"
  chmod 644 "$work/sample.pcap"
  runuser -u dnsledger -- /usr/bin/dnsledger import --data-dir /var/lib/dnsledger --host deb-test \
    "$work/sample.pcap" >&2 || fail "dnsledger import as the dnsledger account failed"
}

before=$(state_snapshot)

step "install"
install_pkg
for bin in /usr/bin/dnsledger /usr/bin/dnsql; do
  expect_mode "$bin" "755 root:root"
  check_ldd "$bin"
done
if [ -n "$bin_dir" ]; then
  check_ldd "$bin_dir/dnsledger"
  check_ldd "$bin_dir/dnsql"
fi
expect_mode /etc/dnsledger "755 root:root"
expect_mode /etc/dnsledger/dnsledger.toml "644 root:root"
expect_mode /etc/dnsledger/ship.env "600 root:root"
expect_mode /usr/share/dnsledger/doh-endpoints.txt "644 root:root"
grep -q '^# license: GPL-3.0' /usr/share/dnsledger/doh-endpoints.txt || fail "the DoH list names no licence"
conffiles=$(dpkg-query -W -f='${Conffiles}\n' dnsledger | awk 'NF {print $1}' | sort | tr '\n' ' ')
[ "$conffiles" = "/etc/dnsledger/dnsledger.toml /etc/dnsledger/ship.env " ] \
  || fail "conffiles are '$conffiles'"
units=(dnsledger.service dnsledger-prune.service dnsledger-prune.timer dnsledger-ship.service
  dnsledger-ship.timer)
unit_paths=()
for u in "${units[@]}"; do
  p=$(dpkg -L dnsledger | grep -E "/systemd/system/$u\$" || true)
  [ -n "$p" ] || fail "unit $u is not in the package"
  expect_mode "$p" "644 root:root"
  unit_paths+=("$p")
done
systemd-analyze verify "${unit_paths[@]}" 2>"$work/verify.log" || { cat "$work/verify.log" >&2; fail "systemd-analyze verify"; }
if grep dnsledger "$work/verify.log" >&2; then fail "systemd-analyze warns about the units"; fi
# Enabled at install: the recorder and the prune timer; the ship timer waits for ship.env.
[ -L /etc/systemd/system/multi-user.target.wants/dnsledger.service ] || fail "dnsledger.service not enabled"
[ -L /etc/systemd/system/timers.target.wants/dnsledger-prune.timer ] || fail "dnsledger-prune.timer not enabled"
[ ! -e /etc/systemd/system/timers.target.wants/dnsledger-ship.timer ] || fail "dnsledger-ship.timer enabled"

step "account and data directory"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd dnsledger) || fail "no dnsledger account"
[ "$uid" -lt 1000 ] || fail "dnsledger is not a system account (uid $uid)"
[ "$home" = /var/lib/dnsledger ] && [ "$shell" = /usr/sbin/nologin ] || fail "account: home $home, shell $shell"
[ "$(getent group dnsledger | cut -d: -f3)" = "$gid" ] || fail "the account's group is not dnsledger"
expect_mode /var/lib/dnsledger "750 dnsledger:dnsledger"

step "man pages and completions"
for page in dnsledger dnsledger-record dnsledger-check dnsledger-prune dnsql dnsql-sql; do
  [ -f "/usr/share/man/man1/$page.1.gz" ] || fail "no man page $page"
done
# (Pages read into variables first: `man | grep -q` can fail on SIGPIPE under pipefail.)
page=$(MANWIDTH=100 man dnsledger 2>/dev/null) || fail "man dnsledger"
grep -q "record" <<<"$page" || fail "man dnsledger does not show the commands"
page=$(MANWIDTH=100 man dnsledger-record 2>/dev/null) || fail "man dnsledger-record"
grep -q -- "--rotate-size" <<<"$page" || fail "man dnsledger-record does not show --rotate-size"
page=$(MANWIDTH=100 man dnsql 2>/dev/null) || fail "man dnsql"
grep -q "SQL" <<<"$page" || fail "man dnsql does not describe it"
if zcat /usr/share/man/man1/dnsledger*.1.gz /usr/share/man/man1/dnsql*.1.gz | grep -c generate-docs >/dev/null; then
  fail "the hidden generate-docs subcommand shows in the man pages"
fi
for f in /usr/share/bash-completion/completions/dnsledger /usr/share/bash-completion/completions/dnsql \
  /usr/share/zsh/vendor-completions/_dnsledger /usr/share/zsh/vendor-completions/_dnsql \
  /usr/share/fish/vendor_completions.d/dnsledger.fish /usr/share/fish/vendor_completions.d/dnsql.fish; do
  expect_mode "$f" "644 root:root"
done
# The bash completion completes: `dnsledger re<TAB>` offers record.
words=$(bash -c 'source /usr/share/bash-completion/completions/dnsledger
  COMP_WORDS=(dnsledger re); COMP_CWORD=1; COMP_LINE="dnsledger re"; COMP_POINT=${#COMP_LINE}
  _dnsledger dnsledger re dnsledger; printf "%s\n" "${COMPREPLY[@]}"')
grep -qx record <<<"$words" || fail "bash completion of 'dnsledger re' gave: $words"

step "dnsledger check from /usr/bin"
/usr/bin/dnsledger --version >&2
/usr/bin/dnsql --version >&2
/usr/bin/dnsledger check >&2 || fail "dnsledger check"

step "the recorder as dnsledger.service runs it"
exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/dnsledger.service)
[[ "$exec_start" == "/usr/bin/dnsledger record "* ]] || fail "ExecStart: $exec_start"
: >"$work/record.log"
# shellcheck disable=SC2086  # the unit's command line, split as systemd splits it (no quotes in it)
$exec_start 2>"$work/record.log" &
recorder_pid=$!
deadline=$((SECONDS + 60))
until grep -q "recording" "$work/record.log"; do
  kill -0 "$recorder_pid" 2>/dev/null || { cat "$work/record.log" >&2; fail "the recorder exited"; }
  [ $SECONDS -lt $deadline ] || { cat "$work/record.log" >&2; fail "the recorder did not start in 60 s"; }
  sleep 0.2
done
grep -q "list=/usr/share/dnsledger/doh-endpoints.txt" "$work/record.log" \
  || { cat "$work/record.log" >&2; fail "the recorder did not load the packaged DoH list"; }
# Every thread runs as the account once attached.
for status in /proc/"$recorder_pid"/task/*/status; do
  grep -q "^Uid:[[:space:]]*$uid[[:space:]]" "$status" || fail "a recorder thread is not uid $uid: $status"
done
# One query (to a port-53 address with no server: it stays unanswered, which is recorded too).
dig +tries=1 +time=1 @127.0.0.1 deb-test.example.invalid A >/dev/null 2>&1 || true
sleep 1
kill -TERM "$recorder_pid"
wait "$recorder_pid" || { cat "$work/record.log" >&2; fail "the recorder did not exit 0 on SIGTERM"; }
recorder_pid=
segments=$(find /var/lib/dnsledger/segments -name '*.parquet' | wc -l)
[ "$segments" -ge 1 ] || { cat "$work/record.log" >&2; fail "no segment recorded"; }
while read -r seg; do
  expect_mode "$seg" "640 dnsledger:dnsledger"
done < <(find /var/lib/dnsledger/segments -name '*.parquet')
expect_mode /var/lib/dnsledger "750 dnsledger:dnsledger"
n=$(runuser -u dnsledger -- /usr/bin/dnsql --data /var/lib/dnsledger --format csv \
  sql "SELECT count(*) AS n FROM dns WHERE qname = 'deb-test.example.invalid'" | tail -n 1)
[ "$n" -ge 1 ] || fail "dnsql (as the account) found $n rows of the test query"

step "prune as dnsledger-prune.service runs it"
exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/dnsledger-prune.service)
unit_user=$(sed -n 's/^User=//p' /lib/systemd/system/dnsledger-prune.service)
[ "$unit_user" = dnsledger ] || fail "prune runs as '$unit_user'"
# shellcheck disable=SC2086
runuser -u "$unit_user" -- $exec_start >&2 || fail "prune as the unit runs it"

step "upgrade keeps the configuration and the data"
import_sample
echo '# local change (package test)' >> /etc/dnsledger/dnsledger.toml
segments_before=$(find /var/lib/dnsledger/segments -type f | sort)
install_pkg
grep -q 'local change (package test)' /etc/dnsledger/dnsledger.toml || fail "the upgrade replaced the edited config"
[ "$(getent passwd dnsledger | cut -d: -f3)" = "$uid" ] || fail "the upgrade changed the account"
[ "$(find /var/lib/dnsledger/segments -type f | sort)" = "$segments_before" ] || fail "the upgrade changed the data"

step "dpkg -r keeps the configuration, the account and the data"
dpkg -r dnsledger >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -r"; }
[ ! -e /usr/bin/dnsledger ] && [ ! -e /usr/bin/dnsql ] || fail "dpkg -r left the binaries"
[ -f /etc/dnsledger/dnsledger.toml ] || fail "dpkg -r removed the config"
getent passwd dnsledger >/dev/null || fail "dpkg -r removed the account"
[ "$(find /var/lib/dnsledger/segments -type f | sort)" = "$segments_before" ] || fail "dpkg -r changed the data"

step "dpkg -P removes everything but the recorded data"
dpkg -P dnsledger >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -P"; }
[ -z "$(grep_accounts)" ] || fail "purge left the account: $(grep_accounts)"
expect_mode /var/lib/dnsledger "750 root:root"
[ -z "$(find /var/lib/dnsledger ! -user root)" ] || fail "purge left files owned by the old uid"
[ "$(find /var/lib/dnsledger/segments -type f | sort)" = "$segments_before" ] || fail "purge changed the data"
after=$(state_snapshot)
left=$(diff <(echo "$before") <(echo "$after") | sed -n 's/^> //p' | grep -v '^/var/lib/dnsledger' || true)
[ -z "$left" ] || fail "purge left: $left"
gone=$(diff <(echo "$before") <(echo "$after") | sed -n 's/^< //p' || true)
[ -z "$gone" ] || fail "install and purge removed: $gone"
rm -rf /var/lib/dnsledger

step "dpkg -P with nothing recorded removes the data directory"
install_pkg
dpkg -P dnsledger >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -P"; }
[ "$(state_snapshot)" = "$before" ] || fail "purge left: $(diff <(echo "$before") <(state_snapshot) | sed -n 's/^> //p')"

step "DNSLEDGER_PURGE_DATA=yes dpkg -P removes the recorded data too"
install_pkg
import_sample
DNSLEDGER_PURGE_DATA=yes dpkg -P dnsledger >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -P"; }
[ "$(state_snapshot)" = "$before" ] || fail "purge left: $(diff <(echo "$before") <(state_snapshot) | sed -n 's/^> //p')"
[ -z "$(grep_accounts)" ] || fail "purge left the account"

t_end=$(date +%s)
echo "package test passed: $deb (build $((t_built - t0)) s, checks $((t_end - t_built)) s)" >&2
