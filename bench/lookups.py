#!/usr/bin/python3
"""The price of recording libc lookups (record's default; --no-lookups turns it off).

A/B, interleaved (on, off, on, off, ...), as root on loopback. A python client calls
socket.getaddrinfo N times in a loop, in a mount namespace of its own with a test /etc/hosts
and /etc/resolv.conf:
  1. local: a name in the hosts file (no DNS packet): what the uprobes add to a lookup;
  2. wire:  a name dnsmasq on 127.0.0.92 answers (A and AAAA per call): per DNS transaction.
Reported per call: the client's wall time (the uprobe and uretprobe traps are paid by the
calling thread), the in-kernel time of the lookup programs (bpf_stats run_time_ns of the
recorder's lookup_* programs; 0 with --no-lookups), and the recorder's CPU time (utime+stime).

usage: sudo bench/lookups.py [--dnsledger target/release/dnsledger] [--reps 5] [--calls 20000]
BPF run-time statistics are on for the runs (kernel.bpf_stats_enabled, restored at exit).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import cpu_ticks, start_recorder, stop

RESOLVER = "127.0.0.92"

CLIENT = """
import socket, sys, time
name, n = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
for _ in range(n):
    socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)
print((time.perf_counter() - t0) / n * 1e6)
"""


def lookup_prog_stats(pid):
    """(run_time_ns, run_cnt) summed over the lookup programs the recorder `pid` holds."""
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True,
                                      text=True, check=True).stdout)
    ours = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            for line in open(f"/proc/{pid}/fdinfo/{fd}"):
                if line.startswith("prog_id:"):
                    ours.add(int(line.split()[1]))
        except OSError:
            pass
    ns = cnt = 0
    for p in progs:
        if p["id"] in ours and p.get("name", "").startswith("lookup_"):
            ns += p.get("run_time_ns", 0)
            cnt += p.get("run_cnt", 0)
    return ns, cnt


def client(work, name, calls):
    script = (f"mount --bind {work}/hosts /etc/hosts && mount --bind {work}/resolv.conf "
              f"/etc/resolv.conf && exec /usr/bin/python3 -c '{CLIENT}' {name} {calls}")
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dnsledger", default="target/release/dnsledger")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--wire-calls", type=int, default=5000)
    a = ap.parse_args()
    tick = os.sysconf("SC_CLK_TCK")
    old_stats = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    work = tempfile.mkdtemp(prefix="lookups-bench-")
    with open(f"{work}/hosts", "w") as f:
        f.write("127.0.0.1 localhost\n192.0.2.77 bench.lookup.test\n")
    with open(f"{work}/resolv.conf", "w") as f:
        f.write(f"nameserver {RESOLVER}\noptions attempts:1 timeout:2\n")
    dnsmasq = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
                                "--port=53", f"--listen-address={RESOLVER}", "--address=/a.test/192.0.2.1",
                                "--address=/a.test/2001:db8::1", "--user=root", "--pid-file", "--cache-size=10000"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {"on": [], "off": []}
    rec = None
    try:
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write("1")
        time.sleep(1)
        for rep in range(a.reps):
            for mode in ["on", "off"]:
                extra = ["--no-lookups"] if mode == "off" else []
                rec = start_recorder(a.dnsledger, f"{work}/data-{mode}-{rep}", extra)
                time.sleep(0.5)
                row = {}
                for case, name, calls in [("local", "bench.lookup.test", a.calls),
                                          ("wire", "www.a.test", a.wire_calls)]:
                    k0, t0 = lookup_prog_stats(rec.pid), cpu_ticks(rec.pid)
                    us = client(work, name, calls)
                    time.sleep(0.3)
                    k1, t1 = lookup_prog_stats(rec.pid), cpu_ticks(rec.pid)
                    row[case] = {
                        "client_us_per_call": us,
                        "kernel_ns_per_call": (k1[0] - k0[0]) / calls,
                        "prog_runs_per_call": (k1[1] - k0[1]) / calls,
                        "recorder_us_per_call": (t1 - t0) / tick * 1e6 / calls,
                    }
                stop(rec)
                results[mode].append(row)
                print(mode, json.dumps(row), flush=True)
    finally:
        if rec is not None and rec.poll() is None:
            stop(rec)
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write(old_stats)
        stop(dnsmasq)
    summary = {}
    for mode in results:
        for case in ["local", "wire"]:
            for k in ["client_us_per_call", "kernel_ns_per_call", "recorder_us_per_call"]:
                v = sorted(r[case][k] for r in results[mode])
                summary[f"{mode} {case} {k}"] = {"median": statistics.median(v), "min": v[0], "max": v[-1]}
    print(json.dumps({"runs": results, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
