#!/usr/bin/python3
"""The price of `record --stacks` for syscalls that are not DNS sends, and for a DNS send.

Interleaved repetitions (each repetition runs every configuration once, in a shuffled order),
as root on loopback. Configurations:
  none          no recorder
  record        dnsledger record --ports 5399
  stacks        dnsledger record --ports 5399 --stacks
  stacks-before the same with --baseline-dnsledger (a build from before this change, whose
                --stacks used raw tp_btf sys_enter/sys_exit), if given
In each, a small C program (compiled here with gcc -O2) times, on one thread:
  getppid   2,000,000 getppid() syscalls: a syscall unrelated to sending (ns per call)
  write     1,000,000 one-byte write()s to /dev/null: a send syscall number on a non-socket,
            the stack program runs and stops at the fd check (ns per call)
  dns-send  100,000 sendto()s of a 26-byte DNS query to a UDP socket on 127.0.0.66:5399 that
            never reads (ns per send, in the sender: the egress program, and with --stacks the
            stack programs, the user stack walk and the stack event)
timed by the thread's CPU clock (CLOCK_THREAD_CPUTIME_ID: time spent descheduled while
other work runs is not counted, interrupts that land on it are), each 5 times in a row; the
fastest of the 5 is the configuration's value for that repetition
(other work on the machine only ever adds time). The table gives per configuration the median
over repetitions and the min-max spread, then the differences taken within each repetition.

With --bpf-stats, one more run of `stacks` afterwards reads the in-kernel time of the two stack
programs per run (bpf_stats run_time_ns / run_cnt, programs found by the prog ids in the
recorder's fdinfo) during the write and the dns-send workloads; kernel.bpf_stats_enabled is
set to 1 for that run only and restored.

usage: sudo bench/stacks.py [--dnsledger target/debug/dnsledger]
       [--baseline-dnsledger OLD_BUILD] [--reps 9] [--bpf-stats]
       [--out bench/stacks-results.json]
The BPF code is the same in a debug and a release build; the recorder's user space (which runs
on the other core) differs.
"""
import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

# A DNS port of this recorder's only (--ports 5399): recorders of other programs on the host
# (tests, other benchmarks) watch 53 and would add their cost to every configuration.
SINK = ("127.0.0.66", 5399)

LOOP_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
	struct timespec t;

	/* The thread's CPU time: time spent descheduled by other work does not count. */
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
	/* A query for x.a.test, type A. */
	static const unsigned char q[] = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'x', 1,
					  'a', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1};
	long n = atol(argv[2]);
	double t0, t1;

	if (strcmp(argv[1], "getppid") == 0) {
		t0 = now_ns();
		for (long i = 0; i < n; i++)
			syscall(SYS_getppid);
		t1 = now_ns();
	} else if (strcmp(argv[1], "write") == 0) {
		int fd = open("/dev/null", O_WRONLY);
		char c = 0;

		t0 = now_ns();
		for (long i = 0; i < n; i++)
			if (write(fd, &c, 1) != 1)
				return 1;
		t1 = now_ns();
	} else {
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[4]))};
		int fd = socket(AF_INET, SOCK_DGRAM, 0);

		inet_pton(AF_INET, argv[3], &sa.sin_addr);
		t0 = now_ns();
		for (long i = 0; i < n; i++)
			if (sendto(fd, q, sizeof(q), 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
				return 1;
		t1 = now_ns();
	}
	printf("%.2f\n", (t1 - t0) / n);
	return 0;
}
"""

WORKLOADS = {"getppid": 2_000_000, "write": 1_000_000, "dns-send": 100_000}


def start_recorder(binary, data_dir, extra):
    p = subprocess.Popen(
        [binary, "record", "--data-dir", data_dir, "--ports", str(SINK[1]), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RUST_LOG": "info"},
    )
    deadline = time.monotonic() + 60
    for line in p.stderr:
        if "recording" in line:
            break
        if time.monotonic() > deadline:
            break
    else:
        sys.exit(f"error: {binary} exited before recording (rc {p.wait()})")
    # Keep reading its log so that it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p


def stop_recorder(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run_loop(loop, workload):
    out = subprocess.run(
        [loop, workload, str(WORKLOADS[workload]), SINK[0], str(SINK[1])],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


STACK_PROGS = ["dns_stack_enter", "dns_stack_exit"]


def prog_stats(pid):
    """{name: (run_time_ns, run_cnt)} of the stack programs process `pid` holds open."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                ids.update(int(l.split()[1]) for l in f if l.startswith("prog_id:"))
        except OSError:
            pass
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True,
                         check=True, text=True)
    return {p["name"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0))
            for p in json.loads(out.stdout) if p.get("id") in ids and p.get("name") in STACK_PROGS}


def program_costs(loop, binary, data_dir):
    """ns per run of each stack program during the write and the dns-send workloads."""
    sysctl = "/proc/sys/kernel/bpf_stats_enabled"
    with open(sysctl) as f:
        before = f.read().strip()
    costs = {}
    rec = None
    try:
        with open(sysctl, "w") as f:
            f.write("1")
        rec = start_recorder(binary, data_dir, ["--stacks"])
        for w in ["write", "dns-send"]:
            s0 = prog_stats(rec.pid)
            run_loop(loop, w)
            s1 = prog_stats(rec.pid)
            costs[w] = {}
            for name in STACK_PROGS:
                dt = s1[name][0] - s0[name][0]
                dn = s1[name][1] - s0[name][1]
                costs[w][name] = {"runs": dn, "ns_per_run": dt / dn if dn else None}
                print(f"{w}: {name} {dn} runs, {dt / max(dn, 1):.0f} ns per run")
    finally:
        if rec:
            stop_recorder(rec)
        with open(sysctl, "w") as f:
            f.write(before)
    return costs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dnsledger", default="target/debug/dnsledger")
    ap.add_argument("--baseline-dnsledger", help="an older build to compare its --stacks")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--bpf-stats", action="store_true", help="also the programs' own time")
    ap.add_argument("--out", default="bench/stacks-results.json")
    args = ap.parse_args()
    # SIGTERM (and SIGINT, which a background job may have ignored) unwind through the
    # `finally` that stops the recorder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.geteuid() != 0:
        sys.exit("error: the recorder needs root\nhint: sudo bench/stacks.py")
    configs = {
        "none": None,
        "record": (args.dnsledger, []),
        "stacks": (args.dnsledger, ["--stacks"]),
    }
    if args.baseline_dnsledger:
        configs["stacks-before"] = (args.baseline_dnsledger, ["--stacks"])

    # The DNS sink: bound, never read (datagrams beyond its buffer are dropped by the kernel).
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(SINK)
    results = {c: {w: [] for w in WORKLOADS} for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "loop.c")
        loop = os.path.join(tmp, "loop")
        with open(src, "w") as f:
            f.write(LOOP_C)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", loop, src], check=True)
        for rep in range(args.reps):
            order = list(configs)
            random.shuffle(order)
            for c in order:
                rec = None
                try:
                    if configs[c]:
                        binary, extra = configs[c]
                        data = os.path.join(tmp, f"data-{c}-{rep}")
                        rec = start_recorder(binary, data, extra)
                    for w in WORKLOADS:
                        v = min(run_loop(loop, w) for _ in range(5))
                        results[c][w].append(v)
                finally:
                    if rec:
                        stop_recorder(rec)
            print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
        kernel = None
        if args.bpf_stats:
            kernel = program_costs(loop, args.dnsledger, os.path.join(tmp, "data-bpf-stats"))

    summary = {}
    print(f"| ns per call (median of {args.reps} interleaved reps, min-max) | "
          + " | ".join(configs) + " |")
    print("|---|" + "---|" * len(configs))
    for w in WORKLOADS:
        cells = []
        for c in configs:
            v = sorted(results[c][w])
            med = statistics.median(v)
            summary.setdefault(c, {})[w] = {"median": med, "min": v[0], "max": v[-1]}
            cells.append(f"{med:.1f} ({v[0]:.1f}-{v[-1]:.1f})")
        print(f"| {w} | " + " | ".join(cells) + " |")
    # Differences within a repetition (same moment, so less of the machine's drift).
    print()
    pairs = [("record", "none"), ("stacks", "record"), ("stacks", "none")]
    if "stacks-before" in configs:
        pairs += [("stacks-before", "record")]
    deltas = {}
    for a, b in pairs:
        for w in WORKLOADS:
            d = sorted(x - y for x, y in zip(results[a][w], results[b][w]))
            deltas[f"{a} - {b}: {w}"] = {
                "median": statistics.median(d),
                "min": d[0],
                "max": d[-1],
            }
            print(f"{a} - {b}, {w}: median {statistics.median(d):+.1f} ns "
                  f"(per-rep min {d[0]:+.1f}, max {d[-1]:+.1f})")
    with open(args.out, "w") as f:
        json.dump(
            {
                "kernel": os.uname().release,
                "dnsledger": args.dnsledger,
                "baseline": args.baseline_dnsledger,
                "reps": args.reps,
                "workloads": WORKLOADS,
                "raw": results,
                "summary": summary,
                "paired_deltas": deltas,
                "program_ns_per_run": kernel,
            },
            f,
            indent=1,
        )
    sink.close()


if __name__ == "__main__":
    main()
