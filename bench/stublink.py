#!/usr/bin/python3
"""The price of linking a local stub's upstream queries to their requesters (record's default;
--no-stub-link turns it off).

The linking is user-space work in the recorder's pairer (no BPF program is added or changed:
the in-kernel cost per transaction is the same with and without). A/B, interleaved (on, off,
on, off, ...), as root on loopback: dnsperf at a fixed rate against a dnsmasq stub on
127.0.0.76 with no cache (--cache-size=0: every client query is a miss and makes an upstream
query, the linker's worst case: each is a candidate and each upstream query is looked up),
forwarding to a dnsmasq on 127.0.0.77 that answers from its own data. Per client query (two
rows: the client's and the stub's), the recorder's own CPU time (utime + stime), and how many
upstream rows carry requesters.

usage: sudo bench/stublink.py [--dnsledger target/debug/dnsledger] [--reps 5] [--seconds 8]
       [--qps 2000]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

from benchlib import cpu_ticks, start_recorder, stop


def dnsmasq(args):
    return subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
                             "--port=53", "--user=root", "--pid-file", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def linked_rows(dnsql, data):
    out = subprocess.run([dnsql, "--data", data, "--format", "json", "sql",
                          "SELECT count(*) FILTER (WHERE requester_pids IS NOT NULL) AS up, "
                          "count(*) FILTER (WHERE stub_cache = 'miss') AS miss, count(*) AS n FROM dns"],
                         capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[0]) if out.returncode == 0 else {"error": out.stderr}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dnsledger", default="target/debug/dnsledger")
    ap.add_argument("--dnsql", default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--qps", type=int, default=2000)
    a = ap.parse_args()
    dnsql = a.dnsql or os.path.join(os.path.dirname(a.dnsledger), "dnsql")
    tick = os.sysconf("SC_CLK_TCK")
    work = tempfile.mkdtemp(prefix="stublink-bench-")
    with open(f"{work}/queries", "w") as f:
        for i in range(5000):
            f.write(f"n{i}.a.test A\n")
    upstream = dnsmasq(["--listen-address=127.0.0.77", "--address=/a.test/192.0.2.1", "--local-ttl=300"])
    stub = dnsmasq(["--listen-address=127.0.0.76", "--server=127.0.0.77", "--cache-size=0"])
    results = {"on": [], "off": []}
    rec = None
    try:
        time.sleep(1)
        for rep in range(a.reps):
            for mode in ["on", "off"]:
                extra = ["--no-stub-link"] if mode == "off" else []
                data = f"{work}/data-{mode}-{rep}"
                rec = start_recorder(a.dnsledger, data, extra)
                t0 = cpu_ticks(rec.pid)
                perf = subprocess.run(["nice", "-n", "19", "dnsperf", "-s", "127.0.0.76", "-d", f"{work}/queries",
                                       "-l", str(a.seconds), "-Q", str(a.qps)], capture_output=True, text=True)
                time.sleep(1)
                cpu = (cpu_ticks(rec.pid) - t0) / tick
                stop(rec)
                rec = None
                done = next(int(l.split()[2]) for l in perf.stdout.splitlines() if "Queries completed:" in l)
                r = {"rep": rep, "queries": done, "cpu_s": cpu, "us_per_query": cpu / max(done, 1) * 1e6,
                     "rows": linked_rows(dnsql, data)}
                results[mode].append(r)
                print(mode, json.dumps(r), flush=True)
    finally:
        if rec:
            stop(rec)
        for p in (stub, upstream):
            p.terminate()
            p.wait()
    summary = {}
    for mode, runs in results.items():
        v = sorted(r["us_per_query"] for r in runs)
        summary[mode] = {"median_us_per_query": statistics.median(v), "min": v[0], "max": v[-1],
                         "runs": [round(x, 2) for x in v]}
    print(json.dumps({"qps": a.qps, "seconds": a.seconds, "reps": a.reps, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
