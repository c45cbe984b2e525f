#!/usr/bin/env python3
"""dnsledger benchmark suite (issue 5). Run through bench/run.sh, which installs tools and builds.

Every comparison is measured side by side in one run: arms are interleaved (A B B A ...),
repeated, and reported as median and spread (min-max). Results go to a markdown file.
Only loopback and 127.0.0.0/8 are used. Every process started is stopped by pid on exit.
"""

import argparse
import csv
import datetime as dt
import io
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import BpfStats, duck_dns_view, prog_ids, prog_stats, stats_delta, timed, wait_rusage

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DUCKDB = REPO / ".venv/bin/duckdb"  # the DuckDB CLI (PyPI duckdb-cli), timed as a whole process like dnsql
# bench_gen seals a segment every this many seconds of data time, as a live recorder does with
# its default --rotate-age of 5 minutes (one segment per host-hour understated per-file costs).
SEGMENT_SECS = 300
# Results of an older method (CPU to the end of the traffic only) are not rendered by this one.
METHOD = 2
# The --stacks arm's unrelated syscall: getppid() through syscall(2) (glibc does not cache it),
# n times; prints ns per call.
GETPPID_LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < n; i++) syscall(SYS_getppid);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%.3f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (double)n);
  return 0;
}
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHILDREN = []  # Popen objects to stop on exit


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# process helpers


def start(cmd, **kw):
    p = subprocess.Popen(cmd, **kw)
    CHILDREN.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=120):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"pid {p.pid} did not exit after signal {sig}; killing it")
            p.kill()
            p.wait()
    if p in CHILDREN:
        CHILDREN.remove(p)
    return p.returncode


def stop_ru(p, sig=signal.SIGTERM, timeout=120):
    """Stops p with sig and reaps it with wait4: (rusage of its whole life, exit code)."""
    if p.returncode is None:
        p.send_signal(sig)
    try:
        ru = wait_rusage(p, timeout)
    except TimeoutError as e:
        log(str(e))
        ru = None
    if p in CHILDREN:
        CHILDREN.remove(p)
    if ru is None:
        raise RuntimeError(f"pid {p.pid} did not exit after signal {sig}")
    return ru, p.returncode


def stop_all(*_):
    for p in list(CHILDREN):
        try:
            stop(p, timeout=30)
        except Exception as e:  # keep stopping the others
            log(f"could not stop pid {p.pid}: {e}")


def cpu_seconds(pid):
    """On-CPU time (user + system) of all threads of a process, in seconds.

    Summed from /proc/<pid>/task/*/schedstat (nanoseconds; /proc/<pid>/stat counts 10 ms ticks,
    too coarse for tcpdump at 1k q/s); falls back to utime + stime from /proc/<pid>/stat.
    """
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def smaps_by_mapping(pid):
    """Resident MiB of a process by mapping (heap, anonymous, BPF maps, files), largest first."""
    rss = {}
    cur = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                parts = line.split()
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    cur = parts[5] if len(parts) > 5 else "[anonymous]"
                elif parts and parts[0] == "Rss:" and cur is not None:
                    rss[cur] = rss.get(cur, 0) + int(parts[1]) / 1024
    except OSError as e:
        return [("error", str(e))]
    return sorted(((k, round(v, 1)) for k, v in rss.items() if v >= 0.5), key=lambda kv: -kv[1])[:15]


def run(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def version(cmd):
    try:
        out = subprocess.run(cmd, text=True, capture_output=True, timeout=20)
        text = [l.strip() for l in (out.stdout or out.stderr).strip().splitlines() if re.search(r"\d", l)]
        return text[0].strip("* ") if text else "?"
    except Exception as e:
        return f"unavailable ({e})"


# --------------------------------------------------------------------------------------------
# statistics


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return (min(xs), max(xs))


def fmt(x, digits=3):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if digits == 0 and abs(x) < 1e15:  # counts: every digit ("2e+05" hid 150000 once)
            return f"{x:.0f}"
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.{digits}g}"
        return f"{x:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{x:.0f}"
    return str(x)


def fmt_spread(xs, digits=3):
    s = spread(xs)
    if s is None:
        return "n/a"
    return f"{fmt(s[0], digits)} – {fmt(s[1], digits)}"


# --------------------------------------------------------------------------------------------
# traffic: names served by unbound and queried by dnsperf

SYL = ["ka", "lo", "mi", "ne", "ra", "to", "vi", "zu", "an", "el", "or", "us", "bri", "con",
       "dex", "fin", "gal", "hub", "jet", "lum", "max", "nov", "pix", "sol", "tek", "vox", "web",
       "data", "net", "soft", "shop", "news", "play", "cast", "labs"]
TLDS = ["com"] * 6 + ["net", "org", "io", "de"]
SUBS = ["www", "api", "cdn", "static", "img", "mail", "login", "auth", "m", "app", "ws",
        "telemetry", "update", "edge", "assets", "accounts", "metrics", "push", "sync", "files"]


def make_names(n, seed):
    rng = random.Random(seed)
    domains = [f"{''.join(rng.choice(SYL) for _ in range(rng.randint(2, 3)))}{i % 97}.{rng.choice(TLDS)}"
               for i in range(max(10, n // 4))]
    names, seen = [], set()
    while len(names) < n:
        d = domains[int(rng.random() ** 2 * len(domains))]
        name = d if rng.random() < 0.1 else f"{rng.choice(SUBS)}.{d}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def write_unbound_conf(work, port, names, seed):
    rng = random.Random(seed + 1)
    zones = sorted({n.rsplit(".", 1)[1] for n in names})
    lines = [
        "server:",
        f"  interface: 127.0.0.1@{port}",
        f"  port: {port}",
        "  num-threads: 1",
        "  do-daemonize: no",
        "  use-syslog: no",
        '  logfile: ""',
        "  verbosity: 0",
        '  chroot: ""',
        '  username: ""',
        f'  directory: "{work}"',
        '  pidfile: ""',
        "  access-control: 127.0.0.0/8 allow",
        "  do-not-query-localhost: yes",
        '  module-config: "iterator"',
        "  so-rcvbuf: 4m",
        "  so-sndbuf: 4m",
        "  log-queries: no",
        "  log-replies: no",
    ]
    for z in zones:
        lines.append(f'  local-zone: "{z}." static')
        lines.append(f'  local-data: "{z}. 3600 IN SOA ns1.nic.{z}. hostmaster.nic.{z}. 1 7200 3600 1209600 900"')
    for i, n in enumerate(names):
        for k in range(rng.randint(1, 4)):
            lines.append(f'  local-data: "{n}. {rng.choice([60, 300, 3600])} IN A 198.{18 + k % 2}.{i % 250}.{(i * 7 + k) % 250}"')
        for k in range(rng.randint(1, 2)):
            lines.append(f'  local-data: "{n}. 300 IN AAAA 2001:db8:{i % 65535:x}::{k + 1:x}"')
        if i % 5 == 0:
            lines.append(f"  local-data: '{n}. 3600 IN TXT \"v=spf1 include:_spf.{n} ~all\"'")
            lines.append(f"  local-data: '{n}. 3600 IN TXT \"site-verification={rng.getrandbits(160):040x}\"'")
            lines.append(f'  local-data: "{n}. 3600 IN MX 10 mx1.{n}."')
    lines += ["remote-control:", "  control-enable: no"]
    conf = work / "unbound.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def write_queries(work, names, count, seed):
    """dnsperf data file: Zipf over names, realistic qtype mix, ~5% nonexistent names."""
    rng = random.Random(seed + 2)
    weights = [1 / (k + 1) for k in range(len(names))]
    picks = rng.choices(names, weights=weights, k=count)
    out = []
    for n in picks:
        r = rng.random()
        if r < 0.05:
            out.append(f"nx{rng.randint(0, 5000)}.{n} A")
            continue
        t = rng.random()
        qt = "A" if t < 0.58 else "AAAA" if t < 0.92 else "HTTPS" if t < 0.96 else "TXT" if t < 0.98 else "MX"
        out.append(f"{n} {qt}")
    path = work / "queries.txt"
    path.write_text("\n".join(out) + "\n")
    return path


def free_udp_port(preferred):
    for port in [preferred] + list(range(preferred + 1, preferred + 200)):
        ok = True
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return port
    raise RuntimeError("no free port for the bench DNS server")


# --------------------------------------------------------------------------------------------
# the suite


class Bench:
    def __init__(self, args):
        self.a = args
        self.smoke = args.smoke
        self.bin = Path(args.bin_dir)
        self.work = Path(tempfile.mkdtemp(prefix="dnsledger-bench-", dir=args.work))
        self.results = {"arms": {}, "notes": []}
        self.raw = {}  # name -> list of per-rep dicts
        self.reps = args.reps
        self.dur = args.duration
        self.port = free_udp_port(args.port)
        self.dnsql = self.bin / "dnsql"
        self.dnsledger = self.bin / "dnsledger"
        self.bench_gen = self.bin / "examples" / "bench_gen"
        self.bpf_stats = False  # BPF run-time statistics on (P1/P2/P6 arms only)
        self.plan = {}
        for rate in (["max"] if self.smoke else ["max", 10000, 1000]):
            dur, extra, reps = self.rate_plan(rate)
            self.plan[str(rate)] = f"{dur} s x {reps}{' ' + ' '.join(extra) if extra else ''}"
        self.idle_port = None

    # ---------------------------------------------------------------- services
    def start_unbound(self):
        names = make_names(400 if self.smoke else 5000, 7)
        conf = write_unbound_conf(self.work, self.port, names, 7)
        self.queries = write_queries(self.work, names, 20_000 if self.smoke else 200_000, 7)
        run(["unbound-checkconf", str(conf)])
        self.unbound = start(["unbound", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                             stderr=open(self.work / "unbound.log", "w"))
        for _ in range(100):
            r = subprocess.run(["dig", "+short", "+time=1", "+tries=1", "-p", str(self.port), "@127.0.0.1",
                                names[0], "A"], text=True, capture_output=True)
            if r.returncode == 0 and r.stdout.strip():
                return
            time.sleep(0.1)
        raise RuntimeError(f"unbound did not answer on 127.0.0.1:{self.port}; see {self.work / 'unbound.log'}")

    def start_recorder(self, data_dir, no_raw=False, extra=(), port=None):
        """`dnsledger record` on the bench port (or `port`), started; returns once it logged
        `recording`. With BPF statistics on, the ids of its programs and their counters then."""
        cmd = [str(self.dnsledger), "record", "--data-dir", str(data_dir), "--ports", str(port or self.port)]
        if no_raw:
            cmd.append("--no-raw")
        cmd += list(extra)
        err_path = Path(str(data_dir) + ".stderr")
        err = open(err_path, "w")
        t_spawn = time.time()
        p = start(cmd, stdout=subprocess.DEVNULL, stderr=err)
        p.t_spawn = t_spawn
        deadline = time.time() + 60
        while time.time() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"recorder exited with {p.returncode}: {err_path.read_text()[-2000:]}")
            if "recording" in err_path.read_text():
                p.cpu0 = cpu_seconds(p.pid)
                p.t_ready = time.time()
                p.prog_ids = prog_ids(p.pid) if self.bpf_stats else set()
                p.bpf0 = prog_stats(ids=p.prog_ids) if p.prog_ids else {}
                return p
            time.sleep(0.05)
        raise RuntimeError(f"recorder did not log 'recording' within 60 s: {err_path}")

    def stop_recorder(self, p, data_dir, read_segments=True):
        """Stops the recorder with SIGTERM (it drains its backlog and seals) and returns its
        figures: `cpu_life` (user + system of its whole life, exec to exit, from wait4: start-up,
        BPF load, the traffic, the drain and the final seal), `rss_mib` (its peak RSS over the
        whole life), `cpu_window`/`rss_window` (the old method's: from `recording` to the end of
        the traffic only, for comparison), `bpf_ns`/`bpf_runs` (its programs' in-kernel time
        while it recorded, with BPF statistics on), `stop_s` (SIGTERM to exit)."""
        out = {"cpu_window": cpu_seconds(p.pid) - p.cpu0, "rss_window": peak_rss_mib(p.pid)}
        if p.prog_ids:
            d = stats_delta(prog_stats(ids=p.prog_ids), p.bpf0)
            out["bpf_ns"] = sum(v[0] for v in d.values())
            out["bpf_runs"] = sum(v[1] for v in d.values())
            out["bpf_by_prog"] = {k: v for k, v in d.items() if v[1]}
        t0 = time.time()
        ru, rc = stop_ru(p)
        out["stop_s"] = time.time() - t0
        out["wall_life"] = time.time() - p.t_spawn
        if rc != 0:
            raise RuntimeError(f"recorder exited with {rc} on SIGTERM; see {data_dir}.stderr")
        out["cpu_life"] = ru.ru_utime + ru.ru_stime
        out["rss_mib"] = ru.ru_maxrss / 1024
        if read_segments:
            out.update(self.segments(data_dir))
        return out

    def segments(self, data_dir):
        r = run([str(self.dnsql), "-q", "--data", str(data_dir), "--format", "json", "segments"], check=False)
        rows = dk = du = lost = 0
        size = 0
        per_seg = []
        for line in r.stdout.splitlines():
            if not line.strip():
                continue
            o = json.loads(line)
            rows += int(o.get("rows") or 0)
            per_seg.append(int(o.get("rows") or 0))
            dk += int(o.get("dropped_kernel") or 0)
            du += int(o.get("dropped_user") or 0)
            lost += int(o.get("rows_lost") or 0)
        for f in Path(data_dir, "segments").rglob("*.parquet"):
            size += f.stat().st_size
        if r.returncode not in (0, 3) and rows == 0:
            log(f"dnsql segments failed on {data_dir}: {r.stderr[-500:]}")
        return {"rows": rows, "dropped_kernel": dk, "dropped_user": du, "rows_lost": lost, "bytes": size,
                "segments": len(per_seg), "max_segment_rows": max(per_seg, default=0)}

    def dnsperf(self, seconds, qps=None):
        cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(self.port), "-d", str(self.queries), "-l", str(seconds),
               "-c", "8", "-q", "200", "-T", "1", "-t", "2"]
        if qps:
            cmd += ["-Q", str(qps)]
        r = run(cmd, check=False)
        out = r.stdout

        def grab(label):
            m = re.search(label + r":\s+([\d.]+)", out)
            return float(m.group(1)) if m else None

        res = {"sent": grab("Queries sent"), "completed": grab("Queries completed"),
               "lost": grab("Queries lost"), "qps": grab("Queries per second")}
        if res["qps"] is None:
            raise RuntimeError(f"dnsperf output not understood: {out[-1000:]} {r.stderr[-500:]}")
        return res

    def start_tcpdump(self, path, port=None):
        err = open(str(path) + ".stderr", "w")
        t_spawn = time.time()
        p = start(["tcpdump", "-i", "any", "-n", "-Z", "root", "-B", "32768", "-w", str(path),
                   "port", str(port or self.port)], stdout=subprocess.DEVNULL, stderr=err)
        p.t_spawn = t_spawn
        deadline = time.time() + 20
        while time.time() < deadline:
            if "listening on" in Path(str(path) + ".stderr").read_text():
                p.cpu0 = cpu_seconds(p.pid)
                return p
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"tcpdump did not start: {Path(str(path) + '.stderr').read_text()}")

    def stop_tcpdump(self, p, path):
        """tcpdump's figures, as the recorder's: `cpu_life` (whole life, wait4), `cpu_window`."""
        out = {"cpu_window": cpu_seconds(p.pid) - p.cpu0}
        ru, _ = stop_ru(p, signal.SIGINT)
        out["wall_life"] = time.time() - p.t_spawn
        out["cpu_life"] = ru.ru_utime + ru.ru_stime
        text = Path(str(path) + ".stderr").read_text()
        m = re.search(r"(\d+) packets dropped by kernel", text)
        out["dropped"] = int(m.group(1)) if m else None
        out["pcap_bytes"] = Path(path).stat().st_size if Path(path).exists() else None
        return out

    # ---------------------------------------------------------------- P1, P2, P6
    def rate_plan(self, rate):
        """(seconds of traffic, extra recorder flags, reps) of one rate's arms.

        Long enough to see the steady state: at 10k q/s and at the maximum rate the recorder
        seals every half arm (`--rotate-age`: forced seals, each after more than one full row
        group of 131,072 rows); at 1k q/s the arm lasts 140 s, more than a full row group
        (131 s), and the final seal at SIGTERM writes it. The final seal is in every arm."""
        if rate == "max":
            dur, reps = self.dur, self.reps
        elif rate == 10000:
            dur, reps = self.a.duration_10k, max(1, min(self.reps, 3))
        else:
            dur, reps = self.a.duration_1k, max(1, min(self.reps, 2))
        extra = [] if rate == 1000 else ["--rotate-age", f"{max(1, dur // 2)}s"]
        return dur, extra, reps

    def dns_arm(self, arm, rate, tag):
        """One dnsperf run (or, for `idle`, the same time without traffic).

        arm: none | recorder | tcpdump | both (recorder and tcpdump at once) | idle (recorder
        and tcpdump at once, no traffic). With `concurrent_idle`, an idle recorder and an idle
        tcpdump run alongside on a port nobody uses, started and stopped with the others: an
        idle run of exactly the same length (only at fixed rates, where it cannot take q/s)."""
        dur, extra, _ = self.rate_plan(rate)
        d = self.work / f"{tag}"
        idle_port = self.idle_port
        procs = {}
        if arm in ("recorder", "both", "idle"):
            procs["recorder"] = ("rec", self.start_recorder(d, extra=extra), d)
        if arm in ("tcpdump", "both", "idle"):
            procs["tcpdump"] = ("td", self.start_tcpdump(Path(str(d) + ".pcap")), Path(str(d) + ".pcap"))
        if arm == "both":
            di = self.work / f"{tag}-idle"
            procs["recorder_idle"] = ("rec", self.start_recorder(di, extra=extra, port=idle_port), di)
            procs["tcpdump_idle"] = ("td", self.start_tcpdump(Path(str(di) + ".pcap"), port=idle_port),
                                     Path(str(di) + ".pcap"))
        t0 = time.time()
        if arm == "idle":
            time.sleep(dur)
            perf = {"sent": 0, "completed": 0, "lost": 0, "qps": 0}
        else:
            perf = self.dnsperf(dur, None if rate == "max" else rate)
        wall = time.time() - t0
        out = {"arm": arm, "rate": rate, **perf, "wall": wall, "duration": dur, "flags": " ".join(extra)}
        for name, (kind, p, path) in procs.items():
            if kind == "rec":
                out[name] = self.stop_recorder(p, path, read_segments=not name.endswith("idle") and arm != "idle")
            else:
                out[name] = self.stop_tcpdump(p, path)
        # Keep disk use small: segments and pcaps are not needed after the numbers are taken.
        for _, _, path in procs.values():
            if path.suffix == ".pcap":
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
        brief = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items() if not isinstance(v, dict)}
        for name in procs:
            brief[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in out[name].items()
                           if k in ("cpu_life", "cpu_window", "bpf_ns", "rss_mib", "rows", "segments", "dropped")}
        log(f"{tag}: {json.dumps(brief)}")
        return out

    def p1_p2_p6(self):
        self.idle_port = free_udp_port(self.port + 1)
        rates = ["max"] if self.smoke else ["max", 10000, 1000]
        # In-kernel time of the recorder's programs: BPF run-time statistics on for these arms.
        with BpfStats():
            self.bpf_stats = True
            try:
                for rate in rates:
                    _, _, reps = self.rate_plan(rate)
                    if rate == "max":
                        # The q/s ratio needs each arm alone; idle arms (same length, no
                        # traffic) in the first three repetitions.
                        arms = ["none", "recorder", "tcpdump", "idle"]
                    else:
                        arms = ["both"]
                    results = {a: [] for a in arms}
                    for i in range(reps):
                        order = arms if i % 2 == 0 else list(reversed(arms))
                        for arm in order:
                            if arm == "idle" and i >= 3:
                                continue
                            results[arm].append(self.dns_arm(arm, rate, f"dns-{rate}-{arm}-{i}"))
                    self.raw[f"dns@{rate}"] = results
            finally:
                self.bpf_stats = False

    # ---------------------------------------------------------------- P3
    def iperf(self, seconds, udp=False):
        cmd = ["iperf3", "-c", "127.0.0.1", "-p", str(self.iperf_port), "-t", str(seconds), "-J"]
        if udp:
            # 64-byte datagrams as fast as the sender can: the per-packet cost of our
            # cgroup_skb programs (every packet passes them, DNS port or not).
            cmd += ["-u", "-l", "64", "-b", "0"]
        r = run(cmd, check=False)
        try:
            j = json.loads(r.stdout)
            if udp:
                s = j["end"]["sum_received"]
                return {"kpps": (s["packets"] - s["lost_packets"]) / s["seconds"] / 1e3,
                        "sent_kpps": j["end"]["sum_sent"]["packets"] / j["end"]["sum_sent"]["seconds"] / 1e3}
            return {"gbps": j["end"]["sum_received"]["bits_per_second"] / 1e9}
        except (ValueError, KeyError, ZeroDivisionError) as e:
            raise RuntimeError(f"iperf3 output not understood ({e}): {r.stdout[-500:]} {r.stderr[-300:]}")

    def p3(self):
        self.iperf_port = free_udp_port(5201)
        srv = start(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(self.iperf_port)], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        secs = 1 if self.smoke else 5
        reps = self.reps if self.smoke else max(self.reps, 6)
        res = {"none": [], "recorder": []}
        try:
            for i in range(reps):
                for arm in (["none", "recorder"] if i % 2 == 0 else ["recorder", "none"]):
                    rec = None
                    d = self.work / f"iperf-{arm}-{i}"
                    if arm == "recorder":
                        rec = self.start_recorder(d)
                    row = {**self.iperf(secs), **self.iperf(secs, udp=True)}
                    if rec:
                        self.stop_recorder(rec, d, read_segments=False)
                        shutil.rmtree(d, ignore_errors=True)
                    res[arm].append(row)
                    log(f"iperf {arm} rep {i}: {row['gbps']:.2f} Gbit/s TCP, {row['kpps']:.0f} k datagrams/s UDP-64")
        finally:
            stop(srv)
        self.raw["iperf"] = res

    # ---------------------------------------------------------------- --stacks
    def stacks(self):
        """ns per unrelated syscall (getppid in a C loop) with no recorder, the recorder, and the
        recorder with --stacks; interleaved. Measures whatever the binary's --stacks hooks do."""
        src = self.work / "getppid_loop.c"
        src.write_text(GETPPID_LOOP_C)
        exe = self.work / "getppid_loop"
        run(["gcc", "-O2", "-o", str(exe), str(src)])
        n = 200_000 if self.smoke else 2_000_000

        def loop():
            # The median of 5 runs of n calls each: ns per call.
            xs = [float(run([str(exe), str(n)]).stdout.strip()) for _ in range(5)]
            return statistics.median(xs)

        arms = ["none", "recorder", "stacks"]
        res = {a: [] for a in arms}
        for i in range(self.reps if self.smoke else max(self.reps, 5)):
            for arm in (arms if i % 2 == 0 else list(reversed(arms))):
                d = self.work / f"stacks-{arm}-{i}"
                rec = None
                if arm != "none":
                    rec = self.start_recorder(d, extra=["--stacks"] if arm == "stacks" else [])
                ns = loop()
                if rec:
                    self.stop_recorder(rec, d, read_segments=False)
                    shutil.rmtree(d, ignore_errors=True)
                res[arm].append({"ns": ns})
                log(f"stacks {arm} rep {i}: {ns:.1f} ns per getppid()")
        self.raw["stacks"] = res

    # ---------------------------------------------------------------- P4
    def p4(self):
        """Same traffic seen by recorder (raw), recorder (--no-raw) and tcpdump at once."""
        d_raw, d_noraw, pcap = self.work / "p4-raw", self.work / "p4-noraw", self.work / "p4.pcap"
        rec1 = self.start_recorder(d_raw)
        rec2 = self.start_recorder(d_noraw, no_raw=True)
        td = self.start_tcpdump(pcap)
        perf = self.dnsperf(self.dur if self.smoke else max(self.dur, 15), 2000 if self.smoke else 10000)
        seg_raw = self.stop_recorder(rec1, d_raw)
        seg_noraw = self.stop_recorder(rec2, d_noraw)
        tdo = self.stop_tcpdump(td, pcap)
        t0 = time.time()
        run(["zstd", "-q", "-19", "-f", str(pcap), "-o", str(pcap) + ".zst"])
        zstd_s = time.time() - t0
        out = {"completed": perf["completed"], "qps": perf["qps"], "raw": seg_raw, "noraw": seg_noraw,
               "pcap_bytes": pcap.stat().st_size, "pcap_zst_bytes": Path(str(pcap) + ".zst").stat().st_size,
               "tcpdump_dropped": tdo["dropped"], "zstd_seconds": zstd_s}
        # Which columns the bytes are in (compressed, summed over the segments' row groups).
        for key, d in (("raw_columns", d_raw), ("noraw_columns", d_noraw)):
            out[key] = self.column_sizes(d)
        log(f"p4: { {k: v for k, v in out.items() if not k.endswith('_columns')} }")
        self.raw["storage"] = out
        for p in (d_raw, d_noraw):
            shutil.rmtree(p, ignore_errors=True)
        pcap.unlink(missing_ok=True)
        Path(str(pcap) + ".zst").unlink(missing_ok=True)

    # ---------------------------------------------------------------- P5
    def gen(self, rows, hosts, pcap=False, days=7):
        """Generated data set, cached by generator version and arguments. Segments are sealed
        every 5 minutes of data time, as a live recorder's default --rotate-age does."""
        ver = re.search(r"GENERATOR_VERSION: u32 = (\d+)", (REPO / "crates/recorder/examples/bench_gen.rs").read_text())
        key = f"v{ver.group(1) if ver else 'x'}-r{rows}-h{hosts}-d{days}-s1-seg{SEGMENT_SECS}{'-pcap' if pcap else ''}"
        cache = Path(self.a.cache) / key
        manifest = cache / "manifest.json"
        if manifest.exists():
            m = json.loads(manifest.read_text())
            m["cached"] = True
            m["_dir"] = key
            log(f"using cached data set {cache}")
            return cache, m
        shutil.rmtree(cache, ignore_errors=True)
        tmp = Path(str(cache) + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.bench_gen), "--rows", str(rows), "--hosts", str(hosts), "--days", str(days), "--seed", "1",
               "--segment-secs", str(SEGMENT_SECS), "--out", str(tmp)]
        if pcap:
            cmd += ["--pcap", str(tmp / "capture.pcap")]
        log("generating:", " ".join(cmd))
        r = run(cmd, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"bench_gen failed: {r.stderr[-2000:]}")
        tmp.rename(cache)
        m = json.loads(manifest.read_text())
        m["cached"] = False
        m["_dir"] = key
        return cache, m

    def p5_queries(self, m):
        # A mid-popularity name (a few dozen rows in 5M); the smoke set is too small for it.
        # Every ORDER BY is total (ties broken down to the grouping keys), so that LIMIT keeps
        # the same rows in both engines and the full results can be compared.
        rare = m["popular_name"] if self.smoke else m["rare_name"]
        return [
            ("who", "who resolved a name (point lookup)",
             f"SELECT host, pid, comm, exe, count(*) AS n FROM {{t}} "
             f"WHERE qname = '{rare}' GROUP BY host, pid, comm, exe ORDER BY n DESC, host, pid, comm, exe"),
            ("top", "top processes in a 2-hour window",
             "SELECT host, comm, exe, count(*) AS n FROM {t} WHERE ts >= {ts_lo} AND ts < {ts_hi} "
             "GROUP BY host, comm, exe ORDER BY n DESC, host, comm, exe LIMIT 20"),
            # Distinct names counted as groups of a first aggregation, not with count(DISTINCT):
            # DataFusion 55 keeps a hash set per group for a grouped count(DISTINCT) (~36 KiB
            # each: 18 GB and 46 s at 5M rows, 9x DuckDB; out of memory at 50M) and its
            # single-distinct rewrite does not take count(*)/avg beside it. Same SQL for both.
            # A hand-written ranking: the `exfil` recipe itself is timed separately (DuckDB
            # cannot run it: it needs dnsql's entropy/alphabet functions).
            ("exfil-sql", "exfil-like ranking, hand-written SQL (names, length, bytes per domain and process)",
             "SELECT registered_domain, host, comm, sum(n) AS q, count(qname) AS names, "
             "round(CAST(sum(length(qname) * n) AS DOUBLE) / sum(CASE WHEN qname IS NOT NULL THEN n END), 6) AS avg_len, "
             "sum(bytes) AS bytes FROM (SELECT registered_domain, host, comm, qname, count(*) AS n, "
             "sum(query_size + coalesce(response_size, 0)) AS bytes FROM {t} "
             "GROUP BY registered_domain, host, comm, qname) AS per_name "
             "GROUP BY registered_domain, host, comm ORDER BY names DESC, q DESC, registered_domain, host, comm LIMIT 20"),
            ("nxdomain", "NXDOMAIN per process",
             "SELECT host, comm, count(*) AS nx, count(DISTINCT qname) AS names FROM {t} "
             "WHERE rcode_name = 'NXDOMAIN' GROUP BY host, comm ORDER BY nx DESC, host, comm LIMIT 20"),
            ("scan", "full-scan aggregate",
             "SELECT CAST(qtype_name AS VARCHAR) AS qtype, CAST(rcode_name AS VARCHAR) AS rcode, count(*) AS n, "
             "round(avg(latency_ns), 3) AS lat, sum(response_size) AS bytes "
             "FROM {t} GROUP BY qtype_name, rcode_name ORDER BY n DESC, qtype, rcode"),
        ]

    @staticmethod
    def p5_sql(sql, engine):
        if engine == "dnsql":
            return sql.format(t="dns", ts_lo="TIMESTAMP '2026-10-29T12:00:00Z'", ts_hi="TIMESTAMP '2026-10-29T14:00:00Z'")
        return sql.format(t="dns", ts_lo="TIMESTAMPTZ '2026-10-29 12:00:00+00'",
                          ts_hi="TIMESTAMPTZ '2026-10-29 14:00:00+00'")

    def run_dnsql(self, data, sql):
        """One whole dnsql process: (wall s, CSV output)."""
        wall, rc, out, err, _ = timed([str(self.dnsql), "-q", "--data", str(data), "--format", "csv", "sql",
                                       self.p5_sql(sql, "dnsql")], timeout=1800)
        if rc != 0:
            raise RuntimeError(f"dnsql failed ({rc}): {err[-1000:]}\n{sql}")
        return wall, out

    def run_duckdb(self, data, sql):
        """One whole DuckDB CLI process (the `duckdb-cli` from PyPI in .venv), as dnsql is timed:
        (wall s, CSV output; NULL written empty, as dnsql's CSV does)."""
        # One schema across a generated set: no union_by_name (reading every file's schema first
        # took 36 s and 5.4 GB against 24 s and 1 GB over ~35,000 files; fleet.py needs it for
        # its live-recorded hosts).
        script = (duck_dns_view(f"read_parquet('{data}/segments/**/*.parquet', hive_partitioning = true)")
                  + f"; {self.p5_sql(sql, 'duckdb')};")
        wall, rc, out, err, _ = timed([str(DUCKDB), "-csv", "-nullvalue", "", "-c", script], timeout=1800)
        if rc != 0:
            raise RuntimeError(f"duckdb failed ({rc}): {err[-1000:]}\n{sql}")
        return wall, out

    def column_sizes(self, data):
        """[[column, compressed bytes], ...], largest first, from the Parquet footers (DuckDB)."""
        sql = (f"SELECT path_in_schema, sum(total_compressed_size)::BIGINT AS b "
               f"FROM parquet_metadata('{data}/segments/**/*.parquet') GROUP BY 1 ORDER BY 2 DESC")
        r = run([sys.executable, str(HERE / "duck.py"), str(data), sql, "--values"], check=False)
        if r.returncode != 0:
            return [["error", r.stderr[-300:]]]
        return json.loads(r.stdout)["values"]

    def p5_set(self, label, data, m):
        qs = self.p5_queries(m)
        res = {}
        # Two timed repetitions after the warm-up: a DuckDB run over ~35,000 files takes tens of
        # seconds on this machine.
        reps = self.reps if self.smoke else max(1, min(self.reps, 2))
        for name, _, sql in qs:
            e = res[name] = {"dnsql": [], "duckdb": []}
            outs = {}
            # Warm-up of both engines (page cache, lazily loaded libraries), not counted.
            for eng in ("dnsql", "duckdb"):
                _, outs[eng] = (self.run_dnsql if eng == "dnsql" else self.run_duckdb)(data, sql)
            for i in range(reps):
                for eng in (["dnsql", "duckdb"] if i % 2 == 0 else ["duckdb", "dnsql"]):
                    wall, outs[eng] = (self.run_dnsql if eng == "dnsql" else self.run_duckdb)(data, sql)
                    e[eng].append(wall)
                log(f"p5 {label} {name} rep {i}: dnsql {e['dnsql'][-1]:.2f}s duckdb {e['duckdb'][-1]:.2f}s")
            compare_results(e, outs["dnsql"], outs["duckdb"])
            log(f"p5 {label} {name}: {e['rows']} rows, same results: {e['same']}")
        # The exfil recipe, as a responder runs it, over the 2-hour window of `top` (over the
        # whole week of 16 hosts it takes minutes: see UNMET.md), warm-up then timed; for
        # scale beside DuckDB's time for the hand-written ranking over the same window.
        window = [] if self.smoke else ["--since", "2026-10-29T12:00:00Z", "--until", "2026-10-29T14:00:00Z"]
        cmd = [str(self.dnsql), "-q", "--data", str(data), "--format", "csv"] + window + ["exfil"]
        sql_w = qs[2][2].replace("FROM {t} GROUP BY", "FROM {t} WHERE ts >= {ts_lo} AND ts < {ts_hi} GROUP BY")
        er = {"dnsql": [], "duckdb": [], "window": " ".join(window) or "whole set"}
        timed(cmd, timeout=1800)
        self.run_duckdb(data, sql_w if window else qs[2][2])
        for i in range(reps):
            for eng in (["dnsql", "duckdb"] if i % 2 == 0 else ["duckdb", "dnsql"]):
                if eng == "dnsql":
                    wall, rc, out, err, rss = timed(cmd, timeout=1800)
                    er["dnsql"].append(wall)
                    er["rc"], er["peak_rss"] = rc, rss
                    er["top"] = out.splitlines()[1:3]
                    if rc not in (0, 3):
                        er["stderr"] = err[-500:]
                else:
                    er["duckdb"].append(self.run_duckdb(data, sql_w if window else qs[2][2])[0])
        log(f"p5 {label} exfil recipe: {er['dnsql']} (rc {er.get('rc')}), DuckDB ranking {er['duckdb']}")
        return res, er

    def p5(self):
        # (label, rows, hosts, days); the smoke set is small in files too (debug dnsql is slow).
        sizes = [("5k", 5_000, 2, 1)] if self.smoke else [("5M", 5_000_000, 16, 7), ("50M", 50_000_000, 16, 7)]
        out = {}
        skipped = [s for s in sizes if self.a.p5_max_rows and s[1] > self.a.p5_max_rows]
        for s in skipped:
            self.results["notes"].append(f"P5 at {s[0]} rows not measured in this run (--p5-max-rows {self.a.p5_max_rows})")
        sizes = [s for s in sizes if s not in skipped]
        for label, rows, hosts, days in sizes:
            t0 = time.time()
            data, m = self.gen(rows, hosts, days=days)
            gen_s = time.time() - t0
            size = sum(f.stat().st_size for f in (data / "segments").rglob("*.parquet"))
            files = sum(1 for _ in (data / "segments").rglob("*.parquet"))
            queries, er = self.p5_set(label, data, m)
            out[label] = {"manifest": m, "bytes": size, "files": files, "gen_wall": gen_s, "queries": queries,
                          "exfil_recipe": er}
        # tshark over a pcap of the same kind of traffic, and dnsql over the same transactions.
        t_rows = 2_000 if self.smoke else 1_000_000
        data, m = self.gen(t_rows, 1, pcap=True, days=1)
        name = m["popular_name"] if self.smoke else m["rare_name"]
        tshark = []
        dq = []
        reps = 1  # tshark takes about a minute: it is for scale, not a ratio under a target
        who_sql = self.p5_queries(m)[0][2]
        for i in range(reps):
            t0 = time.time()
            r = run(["tshark", "-n", "-r", str(data / "capture.pcap"), "-Y", f'dns.qry.name == "{name}"',
                     "-T", "fields", "-e", "frame.time_epoch", "-e", "ip.src", "-e", "dns.qry.name"], check=False)
            tshark.append({"seconds": time.time() - t0, "lines": len(r.stdout.splitlines()), "rc": r.returncode})
            wall, text = self.run_dnsql(data, who_sql)
            dq.append({"seconds": wall, "rows": max(0, len(text.strip().splitlines()) - 1)})
            log(f"tshark {tshark[-1]}, dnsql {dq[-1]}")
        out["tshark"] = {"rows": t_rows, "pcap_bytes": (data / "capture.pcap").stat().st_size,
                         "tshark": tshark, "dnsql": dq, "name": name}
        self.raw["query"] = out

    # ---------------------------------------------------------------- profile
    def profile_query(self):
        """perf profile and EXPLAIN ANALYZE of dnsql on the query with the worst ratio to DuckDB."""
        q = self.raw.get("query", {})
        sets = [k for k in q if k != "tshark"]
        if not sets:
            return {}
        label = sets[-1]
        worst = max(q[label]["queries"].items(),
                    key=lambda kv: (med(kv[1]["dnsql"]) or 0) / (med(kv[1]["duckdb"]) or 1))[0]
        m = q[label]["manifest"]
        sql = dict((n, s) for n, _, s in self.p5_queries(m))[worst].format(
            t="dns", ts_lo="TIMESTAMP '2026-10-29T12:00:00Z'", ts_hi="TIMESTAMP '2026-10-29T14:00:00Z'")
        data = Path(self.a.cache) / m["_dir"]
        pdata = self.work / "perf-q.data"
        run(["perf", "record", "-q", "-F", "999", "-o", str(pdata), "--", str(self.dnsql), "-q", "--data", str(data),
             "--format", "csv", "sql", sql], check=False)
        r = run(["perf", "report", "-i", str(pdata), "--stdio", "--no-children", "--percent-limit", "1.5",
                 "--sort", "dso,sym"], check=False)
        top = "\n".join(l for l in r.stdout.splitlines() if l.strip() and not l.startswith("#"))[:5000]
        e = run([str(self.dnsql), "-q", "--data", str(data), "--format", "csv", "sql", "EXPLAIN ANALYZE " + sql], check=False)
        return {"query": f"{label} `{worst}`", "query_perf": top, "explain": (e.stdout or e.stderr)[:6000]}

    def profile(self):
        """perf profile of the recorder at the max rate (kernel + user), top symbols."""
        if not shutil.which("perf"):
            self.raw["profile"] = {"error": "perf not installed"}
            return
        d = self.work / "profile"
        # JIT-ed BPF programs get symbols only with bpf_jit_kallsyms; restored afterwards.
        ks = Path("/proc/sys/net/core/bpf_jit_kallsyms")
        ks_old = ks.read_text().strip() if ks.exists() else None
        if ks_old == "0":
            ks.write_text("1")
        try:
            self._profile(d)
        finally:
            if ks_old == "0":
                ks.write_text("0")

    def _profile(self, d):
        rec = self.start_recorder(d)
        data = self.work / "perf.data"
        pr = start(["perf", "record", "-q", "-F", "999", "-o", str(data), "-a", "--", "sleep", str(self.dur)],
                   stdout=subprocess.DEVNULL, stderr=open(self.work / "perf.stderr", "w"))
        perf = self.dnsperf(self.dur)
        smaps = smaps_by_mapping(rec.pid)
        pr.wait()
        CHILDREN.remove(pr)
        self.stop_recorder(rec, d)
        rep = {}

        def report_lines(extra):
            r = run(["perf", "report", "-i", str(data), "--stdio", "--no-children"] + extra, check=False)
            return [l.rstrip() for l in r.stdout.splitlines() if l.strip() and not l.startswith("#")]

        rep["recorder"] = "\n".join(report_lines(["--pid", str(rec.pid), "--percentage", "relative",
                                                   "--percent-limit", "1", "--sort", "dso,sym"]))[:6000]
        rep["system"] = "\n".join(report_lines(["--percent-limit", "1", "--sort", "comm,dso"]))[:4000]
        bpf = [l for l in report_lines(["--sort", "comm,sym"]) if "bpf_prog" in l]
        rep["bpf"] = "\n".join(bpf[:30])
        rep["qps"] = perf["qps"]
        rep["smaps"] = smaps
        rep.update(self.profile_query())
        self.raw["profile"] = rep
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# report


def normalize_csv(text):
    """CSV rows as sorted tuples, numbers with a fraction rounded to 9 significant digits (the
    engines print the same double with different digits); header apart."""
    rows = list(csv.reader(io.StringIO(text)))

    def cell(x):
        if re.fullmatch(r"-?\d+\.\d*(e[-+]?\d+)?|-?\d+e[-+]?\d+", x):
            return f"{float(x):.9g}"
        return x
    return (rows[0] if rows else []), sorted(tuple(cell(x) for x in r) for r in rows[1:])


def compare_results(e, dnsql_out, duck_out):
    """Full sorted results of both engines compared: e['rows'], e['same'] and the first
    differences when they differ."""
    _, a = normalize_csv(dnsql_out)
    _, b = normalize_csv(duck_out)
    e["rows"] = len(a)
    e["rows_duckdb"] = len(b)
    e["same"] = a == b
    if not e["same"]:
        e["diff"] = [list(x) for x in sorted(set(a) ^ set(b))[:6]]


def verdict(ok):
    if isinstance(ok, str):
        return ok
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def verdict_spread(vals, ok):
    """A verdict that respects the spread: met when every repetition meets the target, not met
    when none does, inconclusive when the repetitions fall on both sides of it."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a (not measured)"
    hits = [bool(ok(v)) for v in vals]
    if all(hits):
        return "**met**"
    if not any(hits):
        return "**not met**"
    return "**inconclusive** (spread straddles the target)"


def p2_figures(raw, rate):
    """Per repetition at one rate: the recorder's and tcpdump's CPU per transaction, whole life
    minus an idle run of the same length, the recorder's in-kernel program time apart and added
    in. None when the rate was not measured (or was measured with the old method)."""
    runs = raw.get(f"dns@{rate}")
    if not runs:
        return None
    if "both" in runs:
        rec_runs = td_runs = runs["both"]
        idle_rec = med([r["recorder_idle"]["cpu_life"] for r in runs["both"] if "recorder_idle" in r])
        idle_td = med([r["tcpdump_idle"]["cpu_life"] for r in runs["both"] if "tcpdump_idle" in r])
    else:
        rec_runs, td_runs = runs.get("recorder", []), runs.get("tcpdump", [])
        idle_rec = med([r["recorder"]["cpu_life"] for r in runs.get("idle", [])])
        idle_td = med([r["tcpdump"]["cpu_life"] for r in runs.get("idle", [])])
    if not rec_runs or not isinstance(rec_runs[0].get("recorder"), dict):
        return None
    out = {"idle_rec": idle_rec, "idle_td": idle_td, "rec": [], "td": [], "compass": []}
    for r in rec_runs:
        rec, c = r["recorder"], r["completed"] or 0
        if not c:
            continue
        proc = (rec["cpu_life"] - (idle_rec or 0)) / c * 1e6
        kern = rec.get("bpf_ns", 0) / 1e3 / c
        win = rec["cpu_window"] / c * 1e6
        out["rec"].append({"proc_us": proc, "kern_us": kern, "total_us": proc + kern, "window_us": win,
                           "life_s": rec["cpu_life"], "drain_seal_s": rec["cpu_life"] - rec["cpu_window"]})
    for r in td_runs:
        t, c = r["tcpdump"], r["completed"] or 0
        if c:
            out["td"].append({"us": (t["cpu_life"] - (idle_td or 0)) / c * 1e6, "window_us": t["cpu_window"] / c * 1e6})
    for a, t in zip(out["rec"], out["td"]):
        out["compass"].append(a["total_us"] / t["us"] if t["us"] > 0 else None)
    return out


def report(b, started, elapsed, path, versions):
    raw = b.raw
    L = []
    w = L.append
    rates = ["max"] if b.smoke else ["max", 10000, 1000]
    mode = "smoke (seconds-long CI check: numbers are NOT meaningful)" if b.smoke else "full"
    w(f"# dnsledger benchmark results ({'smoke' if b.smoke else 'full'})\n")
    w(f"Generated by `bench/run.sh{' --smoke' if b.smoke else ''}` — do not edit by hand.\n")
    w(f"- date: {started.isoformat(timespec='seconds')} (run took {elapsed / 60:.1f} min); mode: {mode}")
    w(f"- machine: {os.cpu_count()} CPUs, {versions['cpu']}, {versions['mem']}, kernel {platform.release()}, {versions['os']}")
    plan = getattr(b, "plan", None) or {}
    w(f"- reps per arm: {b.reps} at the maximum rate (10k: up to 3, 1k: up to 2, P5: up to 2 after a warm-up); "
      f"traffic per arm: " + ", ".join(f"{k} {v}" for k, v in plan.items()) + "; arms interleaved (A B C, C B A, ...)")
    w(f"- binaries: `{b.bin}` ({versions['dnsledger']}); DNS server: unbound on 127.0.0.1:{b.port}")
    w("- tools: " + "; ".join(f"{k} {v}" for k, v in versions.items() if k not in ("cpu", "mem", "os", "dnsledger")))
    w("- the machine is shared and noisy: only ratios measured side by side in this run are meaningful; spread = "
      "min – max over reps; a verdict is **met** only when every repetition meets the target, **inconclusive** "
      "when the repetitions fall on both sides of it.\n")

    summary = []  # (id, what, value, anchor, ratio, spread, target, verdict)

    def arm(rate, name):
        return raw.get(f"dns@{rate}", {}).get(name, [])

    def rec_runs(rate):
        """The runs with the recorder on the bench port at one rate."""
        return arm(rate, "recorder") or arm(rate, "both")

    def drops(runs):
        if not runs:
            return None
        return sum(r["recorder"].get("dropped_kernel", 0) + r["recorder"].get("dropped_user", 0)
                   + r["recorder"].get("rows_lost", 0) for r in runs)

    # P1
    none, rec = arm("max", "none"), arm("max", "recorder")
    q0, q1 = med([r["qps"] for r in none]), med([r["qps"] for r in rec])
    pairs = [r["qps"] / n["qps"] for n, r in zip(none, rec) if n["qps"]]
    summary.append(("P1", "q/s with recorder ÷ without, max rate", f"{fmt(q1, 0)} q/s", f"{fmt(q0, 0)} q/s",
                    q1 / q0 if q0 and q1 else None, fmt_spread(pairs), "≥ 0.90", verdict_spread(pairs, lambda x: x >= 0.90)))
    tdq = med([r["qps"] for r in arm("max", "tcpdump")])
    if tdq and q0:
        tp = [t["qps"] / n["qps"] for n, t in zip(none, arm("max", "tcpdump")) if n["qps"]]
        summary.append(("P1", "for context: q/s with tcpdump ÷ without, max rate", f"{fmt(tdq, 0)} q/s", f"{fmt(q0, 0)} q/s",
                        tdq / q0, fmt_spread(tp), "report", "—"))
    for rate in rates:
        rr = rec_runs(rate)
        d = drops(rr)
        target = "= 0" if rate in ("max", 10000) else "report"
        summary.append(("P1", f"dropped events @ {rate} (all reps; kernel + user + rows lost)", fmt(d), "0", None, "—",
                        target, verdict(None if d is None else d == 0) if target != "report" else "—"))
        if rr:
            cover = min(r["recorder"].get("rows", 0) / r["completed"] for r in rr if r["completed"])
            summary.append(("P1", f"rows recorded ÷ queries dnsperf completed @ {rate} (worst rep)", fmt(cover, 4), "1",
                            None, "—", "report", "—"))
    # P2
    for rate in rates:
        f = p2_figures(raw, rate)
        if f is None:
            summary.append(("P2", f"recorder CPU µs per transaction @ {rate}", "not measured", "—", None, "—", "≤ 4 µs",
                            "n/a (not measured)"))
            continue
        tot = [x["total_us"] for x in f["rec"]]
        kern = [x["kern_us"] for x in f["rec"]]
        proc = [x["proc_us"] for x in f["rec"]]
        applies = rate in ("max", 10000)
        d = drops(rec_runs(rate))
        # Per completed query: a recorder that drops events did less work than that (flagged).
        dropped = f" ({fmt(d)} events dropped: understated)" if d else ""
        summary.append(("P2", f"recorder µs per transaction @ {rate}: process (whole life − idle) + in-kernel programs",
                        f"{fmt(med(tot))} µs{dropped}", f"process {fmt(med(proc))} + kernel {fmt(med(kern))}", None,
                        fmt_spread(tot), "≤ 4 µs" if applies else "report (target at 10k and max)",
                        verdict_spread(tot, lambda x: x <= 4.0) if applies else "—"))
        summary.append(("P2", f"compass @ {rate}: recorder (process + kernel) ÷ tcpdump (process), µs per transaction",
                        f"{fmt(med(tot))} µs", f"{fmt(med([x['us'] for x in f['td']]))} µs",
                        med(f["compass"]), fmt_spread(f["compass"]), "≤ 1×",
                        verdict_spread(f["compass"], lambda x: x <= 1.0)))
    # P3
    ip = raw.get("iperf")
    if ip:
        for key, what, unit in (("gbps", "loopback TCP Gbit/s", "Gbit/s"), ("kpps", "loopback UDP 64-byte datagrams/s", "k/s")):
            n0 = [r.get(key) for r in ip["none"]]
            n1 = [r.get(key) for r in ip["recorder"]]
            if None in n0 or None in n1:
                continue
            g0, g1 = med(n0), med(n1)
            pr = [a / z for z, a in zip(n0, n1) if z]
            summary.append(("P3", f"{what} with recorder ÷ without", f"{fmt(g1, 2)} {unit}", f"{fmt(g0, 2)} {unit}",
                            g1 / g0 if g0 and g1 else None, fmt_spread(pr), "≥ 0.99",
                            verdict_spread(pr, lambda x: x >= 0.99)))
    # P4
    st = raw.get("storage")
    if st:
        n = st["raw"]["rows"] or 1
        pcap_pt = st["pcap_bytes"] / (st["completed"] or 1)
        zst_pt = st["pcap_zst_bytes"] / (st["completed"] or 1)
        noraw_pt = st["noraw"]["bytes"] / (st["noraw"]["rows"] or 1)
        raw_pt = st["raw"]["bytes"] / n
        summary.append(("P4", "bytes/transaction --no-raw ÷ pcap", f"{fmt(noraw_pt, 1)} B", f"{fmt(pcap_pt, 1)} B",
                        noraw_pt / pcap_pt, "—", "≤ 0.10", verdict(noraw_pt / pcap_pt <= 0.10)))
        summary.append(("P4", "bytes/transaction with raw ÷ pcap.zst (-19)", f"{fmt(raw_pt, 1)} B", f"{fmt(zst_pt, 1)} B",
                        raw_pt / zst_pt, "—", "≤ 1.0", verdict(raw_pt / zst_pt <= 1.0)))
    # P5
    q = raw.get("query", {})
    for label in [k for k in q if k != "tshark"]:
        for name, res in q[label]["queries"].items():
            dn, dd = med(res["dnsql"]), med(res["duckdb"])
            pr = [x / y for x, y in zip(res["dnsql"], res["duckdb"]) if y]
            v = verdict_spread(pr, lambda x: x <= 1.0)
            if res.get("same") is False:
                v = f"**results differ** ({res.get('rows')} vs {res.get('rows_duckdb')} rows)"
            summary.append(("P5", f"{label} rows: `{name}` dnsql ÷ DuckDB CLI (whole-process wall s)", fmt(dn, 2),
                            fmt(dd, 2), dn / dd if dn and dd else None, fmt_spread(pr), "≤ 1.0", v))
            if name == "who":
                summary.append(("P5", f"{label} rows: point lookup of one qname, dnsql", f"{fmt(dn, 2)} s", "—", None,
                                fmt_spread(res["dnsql"], 2), "< 1 s", verdict_spread(res["dnsql"], lambda x: x < 1.0)))
        er = q[label].get("exfil_recipe") or {}
        if er.get("dnsql"):
            dn, dd = med(er["dnsql"]), med(er["duckdb"])
            summary.append(("P5", f"{label} rows: `dnsql exfil` recipe ({er.get('window')}) ÷ DuckDB CLI running the "
                            "hand-written ranking over the same window", f"{fmt(dn, 2)} s", f"{fmt(dd, 2)} s",
                            dn / dd if dn and dd else None, fmt_spread(er["dnsql"], 2), "for scale (DuckDB cannot run the recipe)",
                            "—" if er.get("rc") in (0, 3) else f"**failed** (rc {er.get('rc')})"))
    if not q:
        summary.append(("P5", "dnsql ÷ DuckDB per query; point lookup < 1 s; tshark for scale", "not measured", "—",
                        None, "—", "≤ 1.0; < 1 s", "n/a (not measured)"))
    if "tshark" in q:
        t = q["tshark"]
        ts_, dq_ = med([x["seconds"] for x in t["tshark"]]), med([x["seconds"] for x in t["dnsql"]])
        summary.append(("P5", f"who resolved, {t['rows']} transactions: dnsql ÷ tshark (pcap)", f"{fmt(dq_, 2)} s",
                        f"{fmt(ts_, 2)} s", dq_ / ts_ if ts_ else None, "—", "for scale", "—"))
    # P6
    for rate in rates:
        rss = [r["recorder"].get("rss_mib") for r in rec_runs(rate) if isinstance(r.get("recorder"), dict)]
        rss = [x for x in rss if x is not None]
        m = max(rss) if rss else None
        summary.append(("P6", f"recorder peak RSS @ {rate} (whole life, wait4; worst rep)", f"{fmt(m, 1)} MiB", "—", None,
                        fmt_spread(rss, 1), "≤ 64 MiB", verdict_spread(rss, lambda x: x <= 64)))
    # --stacks
    sk = raw.get("stacks")
    if sk:
        d = [s["ns"] - r["ns"] for s, r in zip(sk["stacks"], sk["recorder"])]
        d0 = [r["ns"] - n["ns"] for r, n in zip(sk["recorder"], sk["none"])]
        summary.append(("stacks", "getppid() ns per call: recorder --stacks − recorder", f"{fmt(med(d), 1)} ns",
                        f"{fmt(med([r['ns'] for r in sk['recorder']]), 1)} ns with the recorder", None, fmt_spread(d, 1),
                        "≤ 50 ns", verdict_spread(d, lambda x: x <= 50)))
        summary.append(("stacks", "getppid() ns per call: recorder − none", f"{fmt(med(d0), 1)} ns",
                        f"{fmt(med([n['ns'] for n in sk['none']]), 1)} ns without", None, fmt_spread(d0, 1), "report", "—"))

    w("## Summary\n")
    w("| P | figure | value | anchor (same run) | ratio | spread (per rep) | target | verdict |")
    w("|---|---|---|---|---|---|---|---|")
    for pid, what, val, anchor, ratio, spr, target, v in summary:
        w(f"| {pid} | {what} | {val} | {anchor} | {fmt(ratio)} | {spr} | {target} | {v} |")
    w("")

    w("## Raw numbers\n")
    w("### P1 / P2 / P6: dnsperf against unbound on loopback\n")
    w("CPU is measured over each process's whole life, from exec to exit (`wait4` rusage, user + system, all "
      "threads): start-up and BPF load, the traffic, the drain of its backlog after SIGTERM and the final seal. "
      "An idle run of the same length (the same flags, no traffic: at the maximum rate its own arms, at 10k and "
      "1k q/s an idle recorder and an idle tcpdump on an unused port beside the measured ones) is subtracted. "
      "The recorder's BPF programs run in the senders' context: their in-kernel time (`run_time_ns` of the "
      "programs it holds, BPF run-time statistics on for these arms, which adds two clock reads per program run) "
      "is reported apart and added into P2. tcpdump's in-kernel work (AF_PACKET copies) is not counted: the compass "
      "ratio is pessimistic for us. `window` is the old method's figure (from `recording`/`listening on` to the end "
      "of the traffic). Peak RSS is the whole life's (`ru_maxrss`). Transactions = dnsperf's completed queries.\n")
    for rate in rates:
        key = f"dns@{rate}"
        if key not in raw:
            continue
        f = p2_figures(raw, rate) or {"rec": [], "td": []}
        w(f"#### rate {rate}\n")
        w("| arm | rep | q/s | completed | lost | rec CPU s life / window | rec µs/tx process + kernel = total (window) | "
          "rec peak RSS MiB | segments (largest, rows) | rows | drops k/u/lost | tcpdump CPU s life | tcpdump µs/tx (window) | tcpdump drops |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        ri = ti = 0
        for a, runs in raw[key].items():
            for i, r in enumerate(runs):
                rec, td = r.get("recorder"), r.get("tcpdump")
                cells = [a, str(i), fmt(r["qps"], 0), fmt(r["completed"], 0), fmt(r["lost"], 0)]
                if isinstance(rec, dict):
                    cells.append(f"{fmt(rec.get('cpu_life'))} / {fmt(rec.get('cpu_window'))}")
                    if a != "idle" and ri < len(f["rec"]):
                        x = f["rec"][ri]
                        ri += 1
                        cells.append(f"{fmt(x['proc_us'])} + {fmt(x['kern_us'])} = {fmt(x['total_us'])} ({fmt(x['window_us'])})")
                    else:
                        cells.append("—")
                    cells += [fmt(rec.get("rss_mib"), 1), f"{rec.get('segments', '—')} ({rec.get('max_segment_rows', '—')})",
                              fmt(rec.get("rows")),
                              f"{rec.get('dropped_kernel', '')}/{rec.get('dropped_user', '')}/{rec.get('rows_lost', '')}"]
                else:
                    cells += ["—"] * 6
                if isinstance(td, dict):
                    cells.append(fmt(td.get("cpu_life")))
                    if a != "idle" and ti < len(f["td"]):
                        x = f["td"][ti]
                        ti += 1
                        cells.append(f"{fmt(x['us'])} ({fmt(x['window_us'])})")
                    else:
                        cells.append("—")
                    cells.append(fmt(td.get("dropped")))
                else:
                    cells += ["—"] * 3
                w("| " + " | ".join(cells) + " |")
        if f.get("idle_rec") is not None:
            w(f"\nIdle runs subtracted (median whole-life CPU, same length, no traffic): recorder {fmt(f['idle_rec'])} s, "
              f"tcpdump {fmt(f['idle_td'])} s.")
        if f["rec"]:
            ds = [x["drain_seal_s"] for x in f["rec"]]
            w(f"The recorder's CPU outside the old window (start-up, drain after the traffic, final seal): median "
              f"{fmt(med(ds))} s per arm (spread {fmt_spread(ds)}).")
        progs = {}
        for r in rec_runs(rate):
            c = r["completed"] or 0
            for k, v in (r["recorder"].get("bpf_by_prog") or {}).items():
                progs.setdefault(k, []).append((v[0] / max(v[1], 1), v[0] / 1e3 / c if c else None, v[1] / c if c else None))
        if progs:
            # The exec/exit tracers run for every process on the host: on a busy machine they
            # count other work's execs too (the figure per transaction then overstates ours).
            w("In-kernel time by program (medians over reps): " + "; ".join(
                f"`{k}` {fmt(med([x[0] for x in v]), 0)} ns per run, {fmt(med([x[2] for x in v]), 2)} runs and "
                f"{fmt(med([x[1] for x in v]))} µs per transaction" for k, v in sorted(progs.items())) +
              ". The exec/exit tracers run for every process started on the host, so on a busy machine they "
              "also count other work's processes.")
        w("")
    if ip:
        w("### P3: iperf3 on loopback, with and without the recorder (interleaved pairs)\n")
        w("TCP (bulk, 64 KiB segments: few packets) and UDP with 64-byte datagrams sent as fast as iperf3 can "
          "(`-u -l 64 -b 0`; datagrams delivered per second): every packet passes our cgroup_skb programs, DNS "
          "port or not, so the small-packet variant shows their per-packet cost.\n")
        for key, unit in (("gbps", "Gbit/s TCP"), ("kpps", "k datagrams/s UDP-64")):
            for a, runs in ip.items():
                g = [r.get(key) for r in runs]
                if None in g:
                    continue
                w(f"- {a}, {unit}: " + ", ".join(fmt(x, 2) for x in g) + f"; median {fmt(med(g), 2)}, spread {fmt_spread(g, 2)}")
        w("")
    sk = raw.get("stacks")
    if sk:
        w("### --stacks: an unrelated syscall (getppid) with no recorder, the recorder, the recorder with --stacks\n")
        w("A C loop of `syscall(SYS_getppid)` (median of 5 runs of 2M calls per repetition; whatever hooks "
          "the binary's `--stacks` installs are measured as they are).\n")
        for a, runs in sk.items():
            g = [r["ns"] for r in runs]
            w(f"- {a}: " + ", ".join(fmt(x, 1) for x in g) + f" ns per call; median {fmt(med(g), 1)}")
        w("")
    if st:
        w("### P4: storage, one capture of the same traffic by all three at once\n")
        w(f"dnsperf at {fmt(st['qps'], 0)} q/s, {fmt(st['completed'], 0)} transactions completed; tcpdump dropped "
          f"{fmt(st['tcpdump_dropped'])} packets.\n")
        w("| store | rows | bytes | bytes / transaction |")
        w("|---|---|---|---|")
        w(f"| segments, raw kept | {st['raw']['rows']} | {st['raw']['bytes']} | {fmt(st['raw']['bytes'] / (st['raw']['rows'] or 1), 1)} |")
        w(f"| segments, --no-raw | {st['noraw']['rows']} | {st['noraw']['bytes']} | {fmt(st['noraw']['bytes'] / (st['noraw']['rows'] or 1), 1)} |")
        w(f"| tcpdump pcap (-i any) | {fmt(st['completed'], 0)} | {st['pcap_bytes']} | {fmt(st['pcap_bytes'] / (st['completed'] or 1), 1)} |")
        w(f"| pcap, zstd -19 | {fmt(st['completed'], 0)} | {st['pcap_zst_bytes']} | {fmt(st['pcap_zst_bytes'] / (st['completed'] or 1), 1)} |")
        w("")
        cols = {k: st.get(k) for k in ("raw_columns", "noraw_columns") if st.get(k)}
        if cols:
            w("Where the segment bytes are (compressed bytes per transaction by column, from the Parquet "
              "footers; columns under 0.5 B per transaction left out):\n")
            w("| column | raw kept | --no-raw |")
            w("|---|---|---|")
            per = {k: {c: b / (st['raw' if k == 'raw_columns' else 'noraw']['rows'] or 1)
                       for c, b in v if isinstance(b, (int, float))} for k, v in cols.items()}
            names = sorted(set().union(*[set(v) for v in per.values()]),
                           key=lambda c: -max(v.get(c, 0) for v in per.values()))
            for c in names:
                vals = [per.get(k, {}).get(c) for k in ("raw_columns", "noraw_columns")]
                if max(v or 0 for v in vals) >= 0.5:
                    w(f"| `{c}` | " + " | ".join(fmt(v, 1) if v is not None else "—" for v in vals) + " |")
            w("")
    if q:
        w("### P5: forensic queries, dnsql vs DuckDB on the same segment files\n")
        w("Wall time of one whole process per query (what a user waits for), both engines: `dnsql` and the DuckDB "
          "CLI (`duckdb-cli` from PyPI, `read_parquet(..., hive_partitioning = true)`), one warm-up run of each "
          "(not counted), then interleaved repetitions. The full results of both engines are compared, sorted "
          "(numbers with a fraction to 9 significant digits); every ORDER BY is total, so LIMIT keeps the same rows. "
          f"The data sets are written as a live recorder writes them: a segment every {SEGMENT_SECS // 60} minutes per host.\n")
        for label in [k for k in q if k != "tshark"]:
            s = q[label]
            m = s["manifest"]
            w(f"#### {label}: {m['rows']} transactions, {m['hosts']} hosts, {m['days']} days, {s['files']} files, "
              f"{s['bytes'] / 2**20:.0f} MiB; generated in {m['seconds']:.0f} s by bench_gen v{m['generator_version']}"
              f"{' (data set cached from an earlier run; that run generated it in the time shown)' if m.get('cached') else ''}\n")
            w("| query | dnsql s (reps) | DuckDB CLI s (reps) | rows dnsql/DuckDB | same results | ratio of medians |")
            w("|---|---|---|---|---|---|")
            for name, r in s["queries"].items():
                dn, dd = med(r["dnsql"]), med(r["duckdb"])
                same = "yes" if r.get("same") else f"**no**: e.g. {r.get('diff', [])[:2]}"
                w(f"| {name} | {', '.join(fmt(x, 2) for x in r['dnsql'])} | {', '.join(fmt(x, 2) for x in r['duckdb'])} | "
                  f"{r.get('rows')}/{r.get('rows_duckdb')} | {same} | {fmt(dn / dd if dn and dd else None)} |")
            er = s.get("exfil_recipe", {})
            if er.get("dnsql"):
                w(f"\n`dnsql exfil` recipe ({er.get('window')}), whole process after a warm-up: "
                  f"{', '.join(fmt(x, 2) for x in er['dnsql'])} s (exit {er.get('rc')}, peak RSS "
                  f"{fmt((er.get('peak_rss') or 0) / 2**20, 0)} MiB); DuckDB CLI, hand-written ranking over the same window: "
                  f"{', '.join(fmt(x, 2) for x in er['duckdb'])} s. Top rows: `{' / '.join(er.get('top', []))}`\n")
        if "tshark" in q:
            t = q["tshark"]
            w(f"#### who resolved `{t['name']}`: tshark over a pcap of {t['rows']} transactions ({t['pcap_bytes'] / 2**20:.0f} MiB) "
              f"vs dnsql over the same transactions as segments\n")
            w(f"- tshark: " + ", ".join(f"{x['seconds']:.2f} s ({x['lines']} packets)" for x in t["tshark"]))
            w(f"- dnsql: " + ", ".join(f"{x['seconds']:.2f} s ({x['rows']} rows)" for x in t["dnsql"]))
            w("")
    prof = raw.get("profile")
    if prof:
        w("### Profile: `perf record -a` during one max-rate recorder arm\n")
        if "error" in prof:
            w(f"not collected: {prof['error']}\n")
        else:
            w(f"dnsperf reached {fmt(prof['qps'], 0)} q/s while profiled (perf itself costs some).\n")
            w("Recorder process (all its threads), share of its own samples by dso/symbol, ≥ 1 %:\n")
            w("```\n" + prof["recorder"] + "\n```\n")
            w("Recorder resident memory by mapping at the end of the traffic (MiB, ≥ 0.5):\n")
            w("```\n" + "\n".join(f"{v:8} {k}" for k, v in prof.get("smaps", [])) + "\n```\n")
            w("Whole system (2 CPUs: dnsperf, unbound, recorder, kernel, and whatever else runs), by comm/dso, ≥ 1 %:\n")
            w("```\n" + prof["system"] + "\n```\n")
            w("Our BPF programs (samples in `bpf_prog_*`, by the process they ran in; % of all samples):\n")
            w("```\n" + (prof.get("bpf") or "(none sampled)") + "\n```\n")
            if prof.get("query"):
                w(f"### Profile: dnsql on {prof['query']} (worst ratio to DuckDB)\n")
                w("`perf record` self time by dso/symbol, ≥ 1.5 %:\n")
                w("```\n" + prof["query_perf"] + "\n```\n")
                w("`EXPLAIN ANALYZE` (truncated):\n")
                w("```\n" + prof["explain"] + "\n```\n")
    for n in b.results["notes"]:
        w(f"- note: {n}")
    fleet = HERE / "FLEET.md"
    if fleet.exists() and not b.smoke:
        # The fleet-scale part (issue 12), a separate run of bench/fleet.py.
        w("\n" + fleet.read_text())
    notes = HERE / "UNMET.md"
    if notes.exists() and not b.smoke:
        w("\n" + notes.read_text())
    w("\nMachine-readable raw data: the `.json` file next to this one (`bench/bench.py --render` re-renders this file from it).")
    path.write_text("\n".join(L) + "\n")
    return summary


FLEET_HEADING = "## Fleet scale (issue 12)"
UNMET_HEADING = "## Targets not met: what costs, what was tried, what it would take"
TRAILER = "Machine-readable raw data: the `.json` file next to this one"


def splice(path):
    """Replaces what a rendered results file took from bench/FLEET.md and bench/UNMET.md with their
    current text (render appends them after its own sections, in this order)."""
    text = path.read_text()
    cut = [i for i in (text.find("\n" + FLEET_HEADING), text.find("\n" + UNMET_HEADING), text.find("\n" + TRAILER))
           if i >= 0]
    if not cut:
        return f"error: {path} has none of the parts --splice replaces\nhint: render it with `bench/bench.py --render`"
    head = text[:min(cut)].rstrip("\n")
    parts = [head]
    for f in (HERE / "FLEET.md", HERE / "UNMET.md"):
        if f.exists():
            parts.append(f.read_text().rstrip("\n"))
    parts.append(TRAILER + " (`bench/bench.py --render` re-renders this file from it).")
    path.write_text("\n\n".join(parts) + "\n")
    log(f"spliced {', '.join(p.name for p in (HERE / 'FLEET.md', HERE / 'UNMET.md') if p.exists())} into {path}")
    return 0


def versions_of(b):
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = "?"
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 2**20:.0f} GiB RAM"
    osr = "?"
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osr = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    try:
        import duckdb
        duck = duckdb.__version__
    except ImportError:
        duck = "not installed"
    return {
        "cpu": cpu, "mem": mem, "os": osr,
        "dnsledger": version([str(b.dnsledger), "--version"]),
        "dnsql": version([str(b.dnsql), "--version"]),
        "rustc": version(["rustc", "--version"]),
        "dnsperf": version(["dnsperf", "-V"]),
        "unbound": version(["unbound", "-V"]),
        "tcpdump": version(["tcpdump", "--version"]),
        "iperf3": version(["iperf3", "--version"]),
        "zstd": version(["zstd", "--version"]),
        "tshark": version(["tshark", "--version"]),
        "duckdb": duck,
        "python": platform.python_version(),
        "git": version(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="seconds-long check of every arm (CI)")
    ap.add_argument("--bin-dir", default=os.environ.get("DNSLEDGER_BIN_DIR"))
    ap.add_argument("--reps", type=int)
    ap.add_argument("--duration", type=int, help="seconds of traffic per arm at the maximum rate (default 15; "
                    "smoke 2); the recorder seals every half arm (--rotate-age)")
    ap.add_argument("--duration-10k", type=int, default=30, help="seconds per arm at 10k q/s (default 30: a seal "
                    "every 15 s, each after a full row group)")
    ap.add_argument("--duration-1k", type=int, default=140, help="seconds per arm at 1k q/s (default 140: more "
                    "than the 131 s a row group of 131,072 rows takes at that rate)")
    ap.add_argument("--port", type=int, default=5399)
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/var/tmp"))
    ap.add_argument("--cache", default=os.environ.get("BENCH_CACHE", "/var/tmp/dnsledger-bench-cache"))
    ap.add_argument("--out", help="results file (default bench/RESULTS.md, smoke: bench/RESULTS-smoke.md in the work dir)")
    ap.add_argument("--only", default=None, help="comma list of p1 (P1/P2/P6), p3, p4, p5, stacks, profile")
    ap.add_argument("--p5-max-rows", type=int, default=0, help="skip P5 data sets larger than this")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    ap.add_argument("--render", metavar="JSON", nargs="+", help="only re-render the results file from saved "
                    "results .json files (e.g. after editing bench/UNMET.md; several: runs of different arms "
                    "merged, each comparison still within one run); measures nothing")
    ap.add_argument("--splice", metavar="MD", help="only replace the parts of the results file MD that come from "
                    "other files (bench/FLEET.md, bench/UNMET.md), keeping its own measurements: after a fleet-only "
                    "run, or when its .json is of an older method that --render refuses; measures nothing")
    a = ap.parse_args()
    if a.splice:
        sys.exit(splice(Path(a.splice)))
    if a.reps is None:
        a.reps = 1 if a.smoke else 5
    if a.duration is None:
        a.duration = 2 if a.smoke else 15
    if a.bin_dir is None:
        a.bin_dir = str(REPO / "target" / ("debug" if a.smoke else "release"))
    if a.render:
        runs = [json.loads(Path(f).read_text()) for f in a.render]
        saved = runs[0]
        old = [f for f, r in zip(a.render, runs) if r.get("method") != METHOD]
        if old:
            sys.exit(f"error: {', '.join(old)} measured with an older method (CPU up to the end of the traffic, "
                     f"no in-kernel time): this version cannot render it\nhint: regenerate it with "
                     f"`sudo bench/run.sh` (or render it with the bench.py of its commit)")
        b = Bench.__new__(Bench)
        b.plan = saved.get("plan")
        b.smoke, b.reps, b.dur, b.bin, b.port = saved["smoke"], saved["reps"], saved["dur"], saved["bin"], saved["port"]
        b.raw, b.results = {}, {"notes": []}
        for r in runs:
            b.raw.update(r["raw"])
            b.results["notes"] += r["notes"]
        if len(runs) > 1:
            b.results["notes"].append("this file merges %d runs of different arms: %s" % (len(runs), "; ".join(
                f"{', '.join(r['raw'])} started {r['started'][:19]}Z ({r['elapsed'] / 60:.1f} min, binaries {r['bin']})"
                for r in runs)))
            saved["elapsed"] = sum(r["elapsed"] for r in runs)
        out = Path(a.out) if a.out else HERE / "RESULTS.md"
        report(b, dt.datetime.fromisoformat(saved["started"]), saved["elapsed"], out, saved["versions"])
        log(f"re-rendered {out} from {a.render}")
        return
    if os.geteuid() != 0:
        sys.exit("error: the benchmarks attach BPF programs and run tcpdump: run as root")
    b = Bench(a)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: (stop_all(), sys.exit(128 + s)))
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.time()
    only = set((a.only or ("p1,p3,p4,p5,stacks" if a.smoke else "p1,p3,p4,p5,stacks,profile")).split(","))
    out = Path(a.out) if a.out else (Path(a.work) / "dnsledger-bench-RESULTS-smoke.md" if a.smoke else HERE / "RESULTS.md")
    versions = versions_of(b)
    failed = []
    try:
        steps = []
        if only & {"p1", "p4", "profile"}:
            b.start_unbound()
        if "p1" in only:
            steps.append(("P1/P2/P6", b.p1_p2_p6))
        if "p3" in only:
            steps.append(("P3", b.p3))
        if "p4" in only:
            steps.append(("P4", b.p4))
        if "p5" in only:
            steps.append(("P5", b.p5))
        if "stacks" in only:
            steps.append(("--stacks", b.stacks))
        if "profile" in only:
            steps.append(("profile", b.profile))
        for name, fn in steps:
            log(f"--- {name} ({time.time() - t0:.0f} s so far)")
            try:
                fn()
            except Exception as e:  # record, go on with the other arms, fail at the end
                log(f"{name} failed: {e}")
                failed.append(name)
                b.results["notes"].append(f"{name} not measured: {str(e)[:500]}")
    finally:
        stop_all()
    elapsed = time.time() - t0
    summary = report(b, started, elapsed, out, versions)
    saved = {"method": METHOD, "plan": b.plan, "smoke": b.smoke, "reps": b.reps, "dur": b.dur, "bin": str(b.bin), "port": b.port, "raw": b.raw,
             "notes": b.results["notes"], "started": started.isoformat(), "elapsed": elapsed, "versions": versions}
    out.with_suffix(".json").write_text(json.dumps(saved, indent=1, default=str) + "\n")
    log(f"results written to {out} ({(time.time() - t0):.0f} s)")
    for row in summary:
        log(" | ".join(str(x) if not isinstance(x, float) else f"{x:.3f}" for x in row))
    if not a.keep:
        shutil.rmtree(b.work, ignore_errors=True)
    if failed:
        sys.exit(f"error: arms failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
