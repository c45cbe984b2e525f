#!/usr/bin/env python3
"""dnsledger benchmark suite (issue 5). Run through bench/run.sh, which installs tools and builds.

Every comparison is measured side by side in one run: arms are interleaved (A B B A ...),
repeated, and reported as median and spread (min-max). Results go to a markdown file.
Only loopback and 127.0.0.0/8 are used. Every process started is stopped by pid on exit.
"""

import argparse
import datetime as dt
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
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

    def start_recorder(self, data_dir, no_raw=False):
        cmd = [str(self.dnsledger), "record", "--data-dir", str(data_dir), "--ports", str(self.port)]
        if no_raw:
            cmd.append("--no-raw")
        err_path = Path(str(data_dir) + ".stderr")
        err = open(err_path, "w")
        p = start(cmd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + 60
        while time.time() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"recorder exited with {p.returncode}: {err_path.read_text()[-2000:]}")
            if "recording" in err_path.read_text():
                p.cpu0 = cpu_seconds(p.pid)
                return p
            time.sleep(0.05)
        raise RuntimeError(f"recorder did not log 'recording' within 60 s: {err_path}")

    def stop_recorder(self, p, data_dir, read_segments=True):
        cpu = cpu_seconds(p.pid) - p.cpu0
        rss = peak_rss_mib(p.pid)
        rc = stop(p)
        if rc != 0:
            raise RuntimeError(f"recorder exited with {rc} on SIGTERM; see {data_dir}.stderr")
        seg = self.segments(data_dir) if read_segments else {}
        return cpu, rss, seg

    def segments(self, data_dir):
        r = run([str(self.dnsql), "-q", "--data", str(data_dir), "--format", "json", "segments"], check=False)
        rows = dk = du = lost = 0
        size = 0
        for line in r.stdout.splitlines():
            if not line.strip():
                continue
            o = json.loads(line)
            rows += int(o.get("rows") or 0)
            dk += int(o.get("dropped_kernel") or 0)
            du += int(o.get("dropped_user") or 0)
            lost += int(o.get("rows_lost") or 0)
        for f in Path(data_dir, "segments").rglob("*.parquet"):
            size += f.stat().st_size
        if r.returncode not in (0, 3) and rows == 0:
            log(f"dnsql segments failed on {data_dir}: {r.stderr[-500:]}")
        return {"rows": rows, "dropped_kernel": dk, "dropped_user": du, "rows_lost": lost, "bytes": size}

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

    def start_tcpdump(self, path):
        err = open(str(path) + ".stderr", "w")
        p = start(["tcpdump", "-i", "any", "-n", "-Z", "root", "-B", "32768", "-w", str(path),
                   "port", str(self.port)], stdout=subprocess.DEVNULL, stderr=err)
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
        cpu = cpu_seconds(p.pid) - p.cpu0
        stop(p, signal.SIGINT)
        text = Path(str(path) + ".stderr").read_text()
        m = re.search(r"(\d+) packets dropped by kernel", text)
        return cpu, int(m.group(1)) if m else None

    # ---------------------------------------------------------------- P1, P2, P6 (+ scaling)
    def dns_arm(self, arm, rate, tag):
        """One dnsperf run with nothing, the recorder or tcpdump attached."""
        d = self.work / f"{tag}"
        rec = td = None
        if arm == "recorder":
            rec = self.start_recorder(d)
        elif arm == "tcpdump":
            td = self.start_tcpdump(Path(str(d) + ".pcap"))
        t0 = time.time()
        perf = self.dnsperf(self.dur, None if rate == "max" else rate)
        wall = time.time() - t0
        out = {"arm": arm, "rate": rate, **perf, "wall": wall}
        if rec:
            cpu, rss, seg = self.stop_recorder(rec, d)
            out.update(cpu=cpu, rss_mib=rss, **seg)
        if td:
            cpu, drops = self.stop_tcpdump(td, Path(str(d) + ".pcap"))
            out.update(cpu=cpu, tcpdump_dropped=drops, pcap_bytes=Path(str(d) + ".pcap").stat().st_size)
        if out.get("cpu") is not None and perf["completed"]:
            out["cpu_s_per_million"] = out["cpu"] / perf["completed"] * 1e6
            out["cpu_pct"] = 100 * out["cpu"] / wall
        # Keep disk use small: segments and pcaps are not needed after the numbers are taken.
        shutil.rmtree(d, ignore_errors=True)
        Path(str(d) + ".pcap").unlink(missing_ok=True)
        log(f"{tag}: {json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()})}")
        return out

    def p1_p2_p6(self):
        rates = ["max"] if self.smoke else ["max", 10000, 1000]
        for rate in rates:
            arms = ["none", "recorder", "tcpdump"] if rate == "max" else ["recorder", "tcpdump"]
            reps = self.reps if rate == "max" else max(1, min(self.reps, 3))
            results = {a: [] for a in arms}
            for i in range(reps):
                order = arms if i % 2 == 0 else list(reversed(arms))
                for arm in order:
                    results[arm].append(self.dns_arm(arm, rate, f"dns-{rate}-{arm}-{i}"))
            self.raw[f"dns@{rate}"] = results

    # ---------------------------------------------------------------- P3
    def iperf(self, seconds):
        r = run(["iperf3", "-c", "127.0.0.1", "-p", str(self.iperf_port), "-t", str(seconds), "-J"], check=False)
        try:
            j = json.loads(r.stdout)
            return j["end"]["sum_received"]["bits_per_second"] / 1e9
        except (ValueError, KeyError) as e:
            raise RuntimeError(f"iperf3 output not understood ({e}): {r.stdout[-500:]} {r.stderr[-300:]}")

    def p3(self):
        self.iperf_port = free_udp_port(5201)
        srv = start(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(self.iperf_port)], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        secs = 1 if self.smoke else 5
        res = {"none": [], "recorder": []}
        try:
            for i in range(self.reps):
                for arm in (["none", "recorder"] if i % 2 == 0 else ["recorder", "none"]):
                    rec = None
                    d = self.work / f"iperf-{arm}-{i}"
                    if arm == "recorder":
                        rec = self.start_recorder(d)
                    gbps = self.iperf(secs)
                    if rec:
                        self.stop_recorder(rec, d, read_segments=False)
                        shutil.rmtree(d, ignore_errors=True)
                    res[arm].append({"gbps": gbps})
                    log(f"iperf {arm} rep {i}: {gbps:.2f} Gbit/s")
        finally:
            stop(srv)
        self.raw["iperf"] = res

    # ---------------------------------------------------------------- P4
    def p4(self):
        """Same traffic seen by recorder (raw), recorder (--no-raw) and tcpdump at once."""
        d_raw, d_noraw, pcap = self.work / "p4-raw", self.work / "p4-noraw", self.work / "p4.pcap"
        rec1 = self.start_recorder(d_raw)
        rec2 = self.start_recorder(d_noraw, no_raw=True)
        td = self.start_tcpdump(pcap)
        perf = self.dnsperf(self.dur if self.smoke else max(self.dur, 15), 2000 if self.smoke else 10000)
        _, _, seg_raw = self.stop_recorder(rec1, d_raw)
        _, _, seg_noraw = self.stop_recorder(rec2, d_noraw)
        _, drops = self.stop_tcpdump(td, pcap)
        t0 = time.time()
        run(["zstd", "-q", "-19", "-f", str(pcap), "-o", str(pcap) + ".zst"])
        zstd_s = time.time() - t0
        out = {"completed": perf["completed"], "qps": perf["qps"], "raw": seg_raw, "noraw": seg_noraw,
               "pcap_bytes": pcap.stat().st_size, "pcap_zst_bytes": Path(str(pcap) + ".zst").stat().st_size,
               "tcpdump_dropped": drops, "zstd_seconds": zstd_s}
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
        """Generated data set, cached by generator version and arguments."""
        ver = re.search(r"GENERATOR_VERSION: u32 = (\d+)", (REPO / "crates/recorder/examples/bench_gen.rs").read_text())
        key = f"v{ver.group(1) if ver else 'x'}-r{rows}-h{hosts}-d{days}-s1{'-pcap' if pcap else ''}"
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
               "--out", str(tmp)]
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
        rare = m["popular_name"] if self.smoke else m["rare_name"]
        return [
            ("who", "who resolved a name (point lookup)",
             f"SELECT host, pid, comm, exe, count(*) AS n, min(ts) AS first, max(ts) AS last FROM {{t}} "
             f"WHERE qname = '{rare}' GROUP BY host, pid, comm, exe ORDER BY n DESC, host, pid"),
            ("top", "top processes in a 2-hour window",
             "SELECT host, comm, exe, count(*) AS n FROM {t} WHERE ts >= {ts_lo} AND ts < {ts_hi} "
             "GROUP BY host, comm, exe ORDER BY n DESC, host, comm LIMIT 20"),
            # Distinct names counted as groups of a first aggregation, not with count(DISTINCT):
            # DataFusion 55 keeps a hash set per group for a grouped count(DISTINCT) (~36 KiB
            # each: 18 GB and 46 s at 5M rows, 9x DuckDB; out of memory at 50M) and its
            # single-distinct rewrite does not take count(*)/avg beside it. Same SQL for both.
            ("exfil", "exfil ranking (names, length, bytes per domain and process)",
             "SELECT registered_domain, host, comm, sum(n) AS q, count(qname) AS names, "
             "CAST(sum(length(qname) * n) AS DOUBLE) / sum(CASE WHEN qname IS NOT NULL THEN n END) AS avg_len, "
             "sum(bytes) AS bytes FROM (SELECT registered_domain, host, comm, qname, count(*) AS n, "
             "sum(query_size + coalesce(response_size, 0)) AS bytes FROM {t} "
             "GROUP BY registered_domain, host, comm, qname) AS per_name "
             "GROUP BY registered_domain, host, comm ORDER BY names DESC, q DESC LIMIT 20"),
            ("nxdomain", "NXDOMAIN per process",
             "SELECT host, comm, count(*) AS nx, count(DISTINCT qname) AS names FROM {t} "
             "WHERE rcode_name = 'NXDOMAIN' GROUP BY host, comm ORDER BY nx DESC, host, comm LIMIT 20"),
            ("scan", "full-scan aggregate",
             "SELECT qtype_name, rcode_name, count(*) AS n, avg(latency_ns) AS lat, sum(response_size) AS bytes "
             "FROM {t} GROUP BY qtype_name, rcode_name ORDER BY n DESC, qtype_name, rcode_name"),
        ]

    def run_dnsql(self, data, sql):
        sql = sql.format(t="dns", ts_lo="TIMESTAMP '2026-10-29T12:00:00Z'", ts_hi="TIMESTAMP '2026-10-29T14:00:00Z'")
        t0 = time.time()
        r = run([str(self.dnsql), "-q", "--data", str(data), "--format", "csv", "sql", sql], check=False)
        wall = time.time() - t0
        if r.returncode != 0:
            raise RuntimeError(f"dnsql failed ({r.returncode}): {r.stderr[-1000:]}\n{sql}")
        return wall, max(0, len(r.stdout.strip().splitlines()) - 1)

    def column_sizes(self, data):
        """[[column, compressed bytes], ...], largest first, from the Parquet footers (DuckDB)."""
        sql = (f"SELECT path_in_schema, sum(total_compressed_size)::BIGINT AS b "
               f"FROM parquet_metadata('{data}/segments/**/*.parquet') GROUP BY 1 ORDER BY 2 DESC")
        r = run([sys.executable, str(HERE / "duck.py"), str(data), sql, "--values"], check=False)
        if r.returncode != 0:
            return [["error", r.stderr[-300:]]]
        return json.loads(r.stdout)["values"]

    def run_duckdb(self, data, sql):
        t0 = time.time()
        r = run([sys.executable, str(HERE / "duck.py"), str(data), sql], check=False)
        wall = time.time() - t0
        if r.returncode != 0:
            raise RuntimeError(f"duckdb failed: {r.stderr[-1000:]}\n{sql}")
        o = json.loads(r.stdout)
        return wall, o["rows"], o["query_seconds"]

    def p5_set(self, label, data, m):
        qs = self.p5_queries(m)
        res = {}
        reps = self.reps if self.smoke else max(1, min(self.reps, 3))
        for name, _, sql in qs:
            res[name] = {"dnsql": [], "duckdb": [], "duckdb_inproc": [], "rows": {}}
            for i in range(reps):
                order = ["dnsql", "duckdb"] if i % 2 == 0 else ["duckdb", "dnsql"]
                for eng in order:
                    if eng == "dnsql":
                        wall, rows = self.run_dnsql(data, sql)
                    else:
                        wall, rows, inproc = self.run_duckdb(data, sql)
                        res[name]["duckdb_inproc"].append(inproc)
                    res[name][eng].append(wall)
                    res[name]["rows"][eng] = rows
                log(f"p5 {label} {name} rep {i}: dnsql {res[name]['dnsql'][-1]:.2f}s duckdb {res[name]['duckdb'][-1]:.2f}s")
        return res

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
            out[label] = {"manifest": m, "bytes": size, "files": files, "gen_wall": gen_s,
                          "queries": self.p5_set(label, data, m)}
            # The dnsql recipe, for reference (not compared with DuckDB), over the same 2-hour
            # window as the "top" query: over a whole week of 16 hosts it runs out of memory
            # (24 GB at 5M rows, see UNMET.md).
            t0 = time.time()
            window = [] if self.smoke else ["--since", "2026-10-29T12:00:00Z", "--until", "2026-10-29T14:00:00Z"]
            r = run([str(self.dnsql), "-q", "--data", str(data), "--format", "csv"] + window + ["exfil"], check=False)
            out[label]["exfil_recipe"] = {"seconds": time.time() - t0, "rc": r.returncode,
                                          "top": r.stdout.splitlines()[1:3]}
        # tshark over a pcap of the same kind of traffic, and dnsql over the same transactions.
        t_rows = 2_000 if self.smoke else 1_000_000
        data, m = self.gen(t_rows, 1, pcap=True, days=1)
        name = m["popular_name"] if self.smoke else m["rare_name"]
        tshark = []
        dq = []
        reps = 1 if self.smoke else 2
        who_sql = self.p5_queries(m)[0][2]
        for i in range(reps):
            t0 = time.time()
            r = run(["tshark", "-n", "-r", str(data / "capture.pcap"), "-Y", f'dns.qry.name == "{name}"',
                     "-T", "fields", "-e", "frame.time_epoch", "-e", "ip.src", "-e", "dns.qry.name"], check=False)
            tshark.append({"seconds": time.time() - t0, "lines": len(r.stdout.splitlines()), "rc": r.returncode})
            wall, rows = self.run_dnsql(data, who_sql)
            dq.append({"seconds": wall, "rows": rows})
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


def verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def report(b, started, elapsed, path, versions):
    raw = b.raw
    L = []
    w = L.append
    mode = "smoke (seconds-long CI check: numbers are NOT meaningful)" if b.smoke else "full"
    w(f"# dnsledger benchmark results ({'smoke' if b.smoke else 'full'})\n")
    w(f"Generated by `bench/run.sh{' --smoke' if b.smoke else ''}` — do not edit by hand.\n")
    w(f"- date: {started.isoformat(timespec='seconds')} (run took {elapsed / 60:.1f} min); mode: {mode}")
    w(f"- machine: {os.cpu_count()} CPUs, {versions['cpu']}, {versions['mem']}, kernel {platform.release()}, {versions['os']}")
    w(f"- reps per arm: {b.reps} (max-rate arms; 10k/1k and P5 use up to 3), arm duration {b.dur} s, arms interleaved (A B C, C B A, ...)")
    w(f"- binaries: `{b.bin}` ({versions['dnsledger']}); DNS server: unbound on 127.0.0.1:{b.port}")
    w("- tools: " + "; ".join(f"{k} {v}" for k, v in versions.items() if k not in ("cpu", "mem", "os", "dnsledger")))
    w("- the machine is shared and noisy: only ratios measured side by side in this run are meaningful; spread = min – max over reps.\n")

    summary = []  # (id, what, value, anchor, ratio, target, ok)

    def arm(rate, name):
        return raw.get(f"dns@{rate}", {}).get(name, [])

    # P1
    none, rec = arm("max", "none"), arm("max", "recorder")
    q0, q1 = med([r["qps"] for r in none]), med([r["qps"] for r in rec])
    ratio = q1 / q0 if q0 and q1 else None
    drops = sum(r.get("dropped_kernel", 0) + r.get("dropped_user", 0) + r.get("rows_lost", 0) for r in rec) if rec else None
    summary.append(("P1", "q/s with recorder ÷ without, max rate", f"{fmt(q1, 0)} q/s", f"{fmt(q0, 0)} q/s", ratio, "≥ 0.97",
                    None if ratio is None else ratio >= 0.97))
    summary.append(("P1", "dropped events at max rate (all reps)", fmt(drops), "0", None, "= 0",
                    None if drops is None else drops == 0))
    if rec:
        cover = min(r.get("rows", 0) / r["completed"] for r in rec if r["completed"])
        summary.append(("P1", "rows recorded ÷ queries dnsperf completed, max rate (worst rep)", fmt(cover, 4), "1",
                        None, "report", None))
    tdq = med([r["qps"] for r in arm("max", "tcpdump")])
    if tdq and q0:
        summary.append(("P1", "for context: q/s with tcpdump ÷ without, max rate", f"{fmt(tdq, 0)} q/s", f"{fmt(q0, 0)} q/s",
                        tdq / q0, "report", None))
    r10 = arm(10000, "recorder")
    if r10:
        d10 = sum(r.get("dropped_kernel", 0) + r.get("dropped_user", 0) + r.get("rows_lost", 0) for r in r10)
        summary.append(("P1", "recorder CPU % at 10k q/s (median)", fmt(med([r.get("cpu_pct") for r in r10]), 2) + " %",
                        "—", None, "report", None))
        summary.append(("P1", "dropped events at 10k q/s", fmt(d10), "0", None, "= 0", d10 == 0))
    # P2
    for rate in (["max"] if b.smoke else ["max", 10000, 1000]):
        rc = med([r.get("cpu_s_per_million") for r in arm(rate, "recorder")])
        tc = med([r.get("cpu_s_per_million") for r in arm(rate, "tcpdump")])
        if rc is None and tc is None:
            continue
        ratio = rc / tc if rc and tc else None
        summary.append(("P2", f"CPU s per million transactions @ {rate}: recorder ÷ tcpdump", fmt(rc), fmt(tc), ratio,
                        "≤ 1.0", None if ratio is None else ratio <= 1.0))
    # P3
    ip = raw.get("iperf")
    if ip:
        g0, g1 = med([r["gbps"] for r in ip["none"]]), med([r["gbps"] for r in ip["recorder"]])
        ratio = g1 / g0 if g0 and g1 else None
        summary.append(("P3", "loopback TCP Gbit/s with recorder ÷ without", fmt(g1, 2), fmt(g0, 2), ratio, "≥ 0.99",
                        None if ratio is None else ratio >= 0.99))
    # P4
    st = raw.get("storage")
    if st:
        n = st["raw"]["rows"] or 1
        pcap_pt = st["pcap_bytes"] / (st["completed"] or 1)
        zst_pt = st["pcap_zst_bytes"] / (st["completed"] or 1)
        noraw_pt = st["noraw"]["bytes"] / (st["noraw"]["rows"] or 1)
        raw_pt = st["raw"]["bytes"] / n
        summary.append(("P4", "bytes/transaction --no-raw ÷ pcap", f"{fmt(noraw_pt, 1)} B", f"{fmt(pcap_pt, 1)} B",
                        noraw_pt / pcap_pt, "≤ 0.10", noraw_pt / pcap_pt <= 0.10))
        summary.append(("P4", "bytes/transaction with raw ÷ pcap.zst (-19)", f"{fmt(raw_pt, 1)} B", f"{fmt(zst_pt, 1)} B",
                        raw_pt / zst_pt, "≤ 0.5", raw_pt / zst_pt <= 0.5))
    # P5
    q = raw.get("query", {})
    for label in [k for k in q if k != "tshark"]:
        for name, res in q[label]["queries"].items():
            dn, dd = med(res["dnsql"]), med(res["duckdb"])
            ratio = dn / dd if dn and dd else None
            summary.append(("P5", f"{label} rows: `{name}` dnsql ÷ DuckDB (wall s)", fmt(dn, 2), fmt(dd, 2), ratio, "≤ 1.0",
                            None if ratio is None else ratio <= 1.0))
            if name == "who":
                summary.append(("P5", f"{label} rows: point lookup of one qname, dnsql", f"{fmt(dn, 2)} s", "—", None,
                                "< 1 s", dn < 1.0))
    if not q:
        summary.append(("P5", "dnsql ÷ DuckDB per query; point lookup < 1 s; tshark for scale", "not measured", "—",
                        None, "≤ 1.0; < 1 s", None))
    if "tshark" in q:
        t = q["tshark"]
        ts_, dq_ = med([x["seconds"] for x in t["tshark"]]), med([x["seconds"] for x in t["dnsql"]])
        summary.append(("P5", f"who resolved, {t['rows']} transactions: dnsql ÷ tshark (pcap)", f"{fmt(dq_, 2)} s",
                        f"{fmt(ts_, 2)} s", dq_ / ts_ if ts_ else None, "for scale", None))
    # P6
    for rate in (["max"] if b.smoke else ["max", 10000, 1000]):
        rss = [r.get("rss_mib") for r in arm(rate, "recorder")]
        if rss and rss[0] is not None:
            m = max(rss)
            summary.append(("P6", f"recorder peak RSS @ {rate} (max over reps)", f"{fmt(m, 1)} MiB", "—", None, "≤ 64 MiB",
                            m <= 64 if rate == "max" else None))

    w("## Summary\n")
    w("| P | figure | value | anchor (same run) | ratio | target | verdict |")
    w("|---|---|---|---|---|---|---|")
    for pid, what, val, anchor, ratio, target, ok in summary:
        w(f"| {pid} | {what} | {val} | {anchor} | {fmt(ratio)} | {target} | {verdict(ok) if target not in ('report', 'for scale') and val != 'not measured' else ('**not measured**' if val == 'not measured' else '—')} |")
    w("")

    w("## Raw numbers\n")
    w("### P1 / P2 / P6: dnsperf against unbound on loopback\n")
    w("Recorder CPU is the on-CPU time of all the recorder's threads (`/proc/<pid>/task/*/schedstat`), from the "
      "moment it logged `recording` (BPF load/attach excluded) to the end of the traffic, before SIGTERM "
      "(the final seal excluded). tcpdump CPU likewise, from `listening on`. Work the kernel does in the "
      "senders' context (our cgroup_skb programs; AF_PACKET copies for tcpdump) is charged to dnsperf/unbound "
      "and shows up in P1's q/s ratio, not here. Transactions = dnsperf's completed queries.\n")
    for key in [k for k in raw if k.startswith("dns@")]:
        w(f"#### rate {key[4:]}\n")
        w("| arm | rep | q/s | completed | lost | CPU s | CPU % | CPU s / 1M tx | peak RSS MiB | rows | drops k/u/lost | tcpdump drops |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for a, runs in raw[key].items():
            for i, r in enumerate(runs):
                w(f"| {a} | {i} | {fmt(r['qps'], 0)} | {fmt(r['completed'], 0)} | {fmt(r['lost'], 0)} | {fmt(r.get('cpu'))} | "
                  f"{fmt(r.get('cpu_pct'), 1)} | {fmt(r.get('cpu_s_per_million'))} | {fmt(r.get('rss_mib'), 1)} | "
                  f"{fmt(r.get('rows'))} | {r.get('dropped_kernel', '')}/{r.get('dropped_user', '')}/{r.get('rows_lost', '')} | "
                  f"{fmt(r.get('tcpdump_dropped'))} |")
        for a, runs in raw[key].items():
            qs = [r["qps"] for r in runs]
            cp = [r.get("cpu_s_per_million") for r in runs]
            w(f"- {a}: q/s median {fmt(med(qs), 0)} (spread {fmt_spread(qs, 0)})"
              + (f"; CPU s/1M tx median {fmt(med(cp))} (spread {fmt_spread(cp)})" if med(cp) else ""))
        w("")
    if ip:
        w("### P3: iperf3 loopback TCP\n")
        for a, runs in ip.items():
            g = [r["gbps"] for r in runs]
            w(f"- {a}: " + ", ".join(fmt(x, 2) for x in g) + f" Gbit/s; median {fmt(med(g), 2)}, spread {fmt_spread(g, 2)}")
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
        w("Wall time of one fresh process per query (what a user waits for), both engines; DuckDB runs from "
          "Python (`bench/duck.py`, `read_parquet(..., hive_partitioning=true)`), its in-process query time is "
          "listed too. Rows = result rows of each engine (must agree).\n")
        for label in [k for k in q if k != "tshark"]:
            s = q[label]
            m = s["manifest"]
            w(f"#### {label}: {m['rows']} transactions, {m['hosts']} hosts, {m['days']} days, {s['files']} files, "
              f"{s['bytes'] / 2**20:.0f} MiB; generated in {m['seconds']:.0f} s by bench_gen v{m['generator_version']}"
              f"{' (data set cached from an earlier run; that run generated it in the time shown)' if m.get('cached') else ''}\n")
            w("| query | dnsql s (reps) | DuckDB s (reps) | DuckDB in-process s | rows dnsql/duckdb | ratio of medians |")
            w("|---|---|---|---|---|---|")
            for name, r in s["queries"].items():
                dn, dd = med(r["dnsql"]), med(r["duckdb"])
                w(f"| {name} | {', '.join(fmt(x, 2) for x in r['dnsql'])} | {', '.join(fmt(x, 2) for x in r['duckdb'])} | "
                  f"{', '.join(fmt(x, 2) for x in r['duckdb_inproc'])} | {r['rows'].get('dnsql')}/{r['rows'].get('duckdb')} | "
                  f"{fmt(dn / dd if dn and dd else None)} |")
            er = s.get("exfil_recipe", {})
            w(f"\n`dnsql exfil` recipe on the same data{'' if b.smoke else ', 2-hour window (--since/--until)'}: {fmt(er.get('seconds'), 2)} s (exit {er.get('rc')}); top rows: "
              f"`{' / '.join(er.get('top', []))}`\n")
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
    ap.add_argument("--duration", type=int, help="seconds per dnsperf arm")
    ap.add_argument("--port", type=int, default=5399)
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/var/tmp"))
    ap.add_argument("--cache", default=os.environ.get("BENCH_CACHE", "/var/tmp/dnsledger-bench-cache"))
    ap.add_argument("--out", help="results file (default bench/RESULTS.md, smoke: bench/RESULTS-smoke.md in the work dir)")
    ap.add_argument("--only", default=None, help="comma list of p1 (P1/P2/P6), p3, p4, p5, profile")
    ap.add_argument("--p5-max-rows", type=int, default=0, help="skip P5 data sets larger than this")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    ap.add_argument("--render", metavar="JSON", nargs="+", help="only re-render the results file from saved "
                    "results .json files (e.g. after editing bench/UNMET.md; several: runs of different arms "
                    "merged, each comparison still within one run); measures nothing")
    a = ap.parse_args()
    if a.reps is None:
        a.reps = 1 if a.smoke else 5
    if a.duration is None:
        a.duration = 2 if a.smoke else 10
    if a.bin_dir is None:
        a.bin_dir = str(REPO / "target" / ("debug" if a.smoke else "release"))
    if a.render:
        runs = [json.loads(Path(f).read_text()) for f in a.render]
        saved = runs[0]
        b = Bench.__new__(Bench)
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
    only = set((a.only or ("p1,p3,p4,p5" if a.smoke else "p1,p3,p4,p5,profile")).split(","))
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
    saved = {"smoke": b.smoke, "reps": b.reps, "dur": b.dur, "bin": str(b.bin), "port": b.port, "raw": b.raw,
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
