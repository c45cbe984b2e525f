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
kernel.bpf_stats_enabled is set to 1 for the runs and restored afterwards.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

PROGS = ["dns_egress", "dns_ingress", "dns_sendmsg4", "dns_connect4"]


def prog_ids(pid):
    """Ids of the BPF programs process `pid` holds open (from its fds' fdinfo)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            pass
    return ids


def prog_stats(pid):
    """run_time_ns and run_cnt of each program the process `pid` holds, by name."""
    ids = prog_ids(pid)
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, check=True, text=True)
    stats = {}
    for p in json.loads(out.stdout):
        if p.get("id") in ids and p.get("name") in PROGS:
            s = stats.setdefault(p["name"], [0, 0])
            s[0] += p.get("run_time_ns", 0)
            s[1] += p.get("run_cnt", 0)
    return stats


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def start_recorder(binary, data, extra):
    rec = subprocess.Popen([binary, "record", "--data-dir", data, *extra], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "RUST_LOG": "info"})
    deadline = time.time() + 60
    for line in rec.stderr:
        if "recording" in line:
            return rec
        if time.time() > deadline:
            break
    rec.kill()
    sys.exit(f"the recorder did not start: {binary} {extra}")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def delta(after, before):
    return {k: (after[k][0] - before.get(k, [0, 0])[0], after[k][1] - before.get(k, [0, 0])[1]) for k in after}


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
    old_stats = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
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
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write("1")
        time.sleep(1)
        for rep in range(a.reps):
            for mode in ["on", "off"]:
                extra = ["--doh-list", f"{work}/doh.txt"] + (["--no-bypass"] if mode == "off" else [])
                rec = start_recorder(a.dnsledger, f"{work}/data-{mode}-{rep}", extra)
                before, t0 = prog_stats(rec.pid), cpu_ticks(rec.pid)
                perf = subprocess.run(["nice", "-n", "19", "dnsperf", "-s", "127.0.0.60", "-d", f"{work}/queries",
                                       "-l", str(a.seconds), "-Q", str(a.qps)], capture_output=True, text=True)
                time.sleep(1)
                dns = delta(prog_stats(rec.pid), before)
                cpu = (cpu_ticks(rec.pid) - t0) / tick
                done = next(int(l.split()[2]) for l in perf.stdout.splitlines() if "Queries completed:" in l)
                # Connect loop, one destination at a time.
                conn = subprocess.Popen(["nice", "-n", "19", "/usr/bin/python3", "-c", CONNECTS, str(a.connects)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                per_dest = []
                last = prog_stats(rec.pid)
                for _ in range(3):
                    conn.stdout.readline()
                    now = prog_stats(rec.pid)
                    c = delta(now, last)["dns_connect4"]
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
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write(old_stats)
        stop(dnsmasq)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
