#!/usr/bin/python3
"""The price of `record --serve-side` (a local DNS server's side of its conversations).

A/B, interleaved (on, off, on, off, ...), as root on loopback: dnsperf at a fixed rate against
a dnsmasq on 127.0.0.71 (a local server with a local client: with --serve-side every query is
recorded from both ends). Per DNS transaction (dnsperf's completed queries):
  - the in-kernel time of the recorder's programs on the path (bpf_stats run_time_ns of its
    egress, ingress, sendmsg4 and recvmsg4 programs, found by the prog ids of the recorder's
    fds);
  - the recorder's own CPU time (utime + stime), which with --serve-side decodes, pairs and
    writes a second row per transaction.
Off, the server's packets still pass through the egress/ingress programs, which drop them
after the port check; on, they are copied to the ring buffer.

usage: sudo bench/serve_side.py [--dnsledger target/debug/dnsledger] [--reps 5] [--seconds 8]
       [--qps 2000]
BPF run-time statistics are on for the runs (benchlib.BpfStats: BPF_ENABLE_STATS, released at exit).
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

from benchlib import BpfStats, cpu_ticks, prog_stats, start_recorder, stats_delta, stop

PROGS = ["dns_egress", "dns_ingress", "dns_sendmsg4", "dns_recvmsg4"]
SERVER = "127.0.0.71"


def spread(xs):
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dnsledger", default="target/debug/dnsledger")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--qps", type=int, default=2000)
    a = ap.parse_args()
    tick = os.sysconf("SC_CLK_TCK")
    stats = BpfStats()
    work = tempfile.mkdtemp(prefix="serve-side-bench-")
    with open(f"{work}/queries", "w") as f:
        for i in range(5000):
            f.write(f"n{i}.a.test A\n")
    dnsmasq = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
                                "--port=53", f"--listen-address={SERVER}", "--address=/a.test/192.0.2.1",
                                "--user=root", "--pid-file", "--cache-size=10000"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {"on": [], "off": []}
    rec = None
    try:
        stats.__enter__()
        time.sleep(1)
        for rep in range(a.reps):
            for mode in ["on", "off"]:
                extra = ["--no-bypass"] + (["--serve-side"] if mode == "on" else [])
                rec = start_recorder(a.dnsledger, f"{work}/data-{mode}-{rep}", extra)
                before, t0 = prog_stats(rec.pid, PROGS), cpu_ticks(rec.pid)
                perf = subprocess.run(["nice", "-n", "19", "dnsperf", "-s", SERVER, "-d", f"{work}/queries",
                                       "-l", str(a.seconds), "-Q", str(a.qps)], capture_output=True, text=True)
                time.sleep(1)
                dns = stats_delta(prog_stats(rec.pid, PROGS), before)
                cpu = (cpu_ticks(rec.pid) - t0) / tick
                done = next(int(l.split()[2]) for l in perf.stdout.splitlines() if "Queries completed:" in l)
                stop(rec)
                row = {
                    "transactions": done,
                    "kernel_ns_per_txn": sum(v[0] for v in dns.values()) / max(done, 1),
                    "by_prog_ns_per_txn": {k: v[0] / max(done, 1) for k, v in dns.items()},
                    "recorder_us_per_txn": cpu * 1e6 / max(done, 1),
                }
                results[mode].append(row)
                print(mode, json.dumps(row), flush=True)
    finally:
        if rec is not None and rec.poll() is None:
            stop(rec)
        stats.__exit__(None, None, None)
        stop(dnsmasq)
    summary = {
        mode: {
            "kernel_ns_per_txn": spread([r["kernel_ns_per_txn"] for r in rows]),
            "recorder_us_per_txn": spread([r["recorder_us_per_txn"] for r in rows]),
            "transactions": spread([r["transactions"] for r in rows]),
        }
        for mode, rows in results.items()
    }
    print(json.dumps({"runs": results, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
