#!/usr/bin/python3
"""The price of recording encrypted-DNS bypass (record's default; --no-bypass turns it off).

A/B, interleaved (on, off, on, off, ...), as root on loopback:
  1. ordinary DNS: dnsperf at a fixed rate against dnsmasq on 127.0.0.60; per DNS transaction,
     the in-kernel time of the recorder's programs (bpf_stats run_time_ns of its egress,
     ingress, sendmsg4 and connect4 programs, found by the prog ids of the recorder's fds) and the recorder's
     own CPU time (utime + stime);
  2. other connections: a C-speed loop of TCP connects (python, refused at once: nothing
     listens) to 127.0.0.61:443 (on the bench DoH list: a bypass event each), 127.0.0.62:443
     (not on the list: one hash lookup) and 127.0.0.61:8080 (port check only); per connect,
     the connect4 program's time.

usage: sudo bench/bypass.py [--dnsledger target/release/dnsledger] [--reps 3] [--seconds 8]
       [--qps 2000]
BPF run-time statistics are on for the runs (benchlib.BpfStats: BPF_ENABLE_STATS, released at exit).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchlib import BpfStats, cpu_ticks, prog_stats, start_recorder, stats_delta, stop

PROGS = ["dns_egress", "dns_ingress", "dns_sendmsg4", "dns_connect4"]


CONNECTS = """
import socket, sys
n = int(sys.argv[1])
for host, port in [("127.0.0.61", 443), ("127.0.0.62", 443), ("127.0.0.61", 8080)]:
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect_ex((host, port))
        s.close()
    sys.stdout.write("done\\n"); sys.stdout.flush(); sys.stdin.readline()
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dnsledger", default="target/release/dnsledger")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--qps", type=int, default=2000)
    ap.add_argument("--connects", type=int, default=20000)
    a = ap.parse_args()
    tick = os.sysconf("SC_CLK_TCK")
    stats = BpfStats()
    work = tempfile.mkdtemp(prefix="bypass-bench-")
    with open(f"{work}/doh.txt", "w") as f:
        f.write("127.0.0.61\n")
    with open(f"{work}/queries", "w") as f:
        for i in range(5000):
            f.write(f"n{i}.a.test A\n")
    dnsmasq = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
                                "--port=53", "--listen-address=127.0.0.60", "--address=/a.test/192.0.2.1",
                                "--user=root", "--pid-file", "--cache-size=10000"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {"on": [], "off": []}
    rec = None
    try:
        stats.__enter__()
        time.sleep(1)
        for rep in range(a.reps):
            for mode in ["on", "off"]:
                extra = ["--doh-list", f"{work}/doh.txt"] + (["--no-bypass"] if mode == "off" else [])
                rec = start_recorder(a.dnsledger, f"{work}/data-{mode}-{rep}", extra)
                before, t0 = prog_stats(rec.pid, PROGS), cpu_ticks(rec.pid)
                perf = subprocess.run(["nice", "-n", "19", "dnsperf", "-s", "127.0.0.60", "-d", f"{work}/queries",
                                       "-l", str(a.seconds), "-Q", str(a.qps)], capture_output=True, text=True)
                time.sleep(1)
                dns = stats_delta(prog_stats(rec.pid, PROGS), before)
                cpu = (cpu_ticks(rec.pid) - t0) / tick
                done = next(int(l.split()[2]) for l in perf.stdout.splitlines() if "Queries completed:" in l)
                # Connect loop, one destination at a time.
                conn = subprocess.Popen(["nice", "-n", "19", "/usr/bin/python3", "-c", CONNECTS, str(a.connects)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                per_dest = []
                last = prog_stats(rec.pid, PROGS)
                for _ in range(3):
                    conn.stdout.readline()
                    now = prog_stats(rec.pid, PROGS)
                    c = stats_delta(now, last)["dns_connect4"]
                    per_dest.append(c[0] / max(c[1], 1))
                    last = now
                    conn.stdin.write("\n")
                    conn.stdin.flush()
                conn.wait()
                stop(rec)
                row = {
                    "transactions": done,
                    "kernel_ns_per_txn": sum(v[0] for v in dns.values()) / max(done, 1),
                    "by_prog_ns_per_txn": {k: v[0] / max(done, 1) for k, v in dns.items()},
                    "recorder_us_per_txn": cpu * 1e6 / max(done, 1),
                    "connect4_ns": dict(zip(["listed_443", "unlisted_443", "other_port"], per_dest)),
                }
                results[mode].append(row)
                print(mode, json.dumps(row), flush=True)
    finally:
        if rec is not None and rec.poll() is None:
            stop(rec)
        stats.__exit__(None, None, None)
        stop(dnsmasq)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
