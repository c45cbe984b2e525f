"""Helpers shared by the benchmark scripts (bench.py, bypass.py, fleet.py).

- the in-kernel time of a process's BPF programs (`run_time_ns`/`run_cnt`, counted while BPF
  run-time statistics are on), and a way to turn those statistics on for as long as a Python
  object lives (the BPF_ENABLE_STATS syscall: reference-counted by the kernel together with
  `kernel.bpf_stats_enabled`, released when its fd is closed or the process dies, so concurrent
  benchmarks on the same machine do not switch each other's statistics off);
- `timed`: one whole process, its wall time, CPU time and peak RSS from `wait4`.
"""
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

BPF_ENABLE_STATS = 32  # enum bpf_cmd
BPF_STATS_RUN_TIME = 0
SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)


class BpfStats:
    """BPF run-time statistics on while this object is open (a context manager).

    Each program run then costs two clock reads more (tens of ns): figures measured with
    statistics on are slightly pessimistic for every BPF program on the host."""

    def __init__(self):
        self.fd = None
        self.sysctl_old = None

    def __enter__(self):
        libc = ctypes.CDLL(None, use_errno=True)
        attr = ctypes.create_string_buffer(128)  # union bpf_attr, zeroed; enable_stats.type = 0
        ctypes.c_uint32.from_buffer(attr, 0).value = BPF_STATS_RUN_TIME
        fd = libc.syscall(SYS_BPF, BPF_ENABLE_STATS, attr, ctypes.c_uint(len(attr)))
        if fd >= 0:
            self.fd = fd
        else:
            # Older kernels: the sysctl (global; restored on exit).
            path = "/proc/sys/kernel/bpf_stats_enabled"
            with open(path) as f:
                self.sysctl_old = f.read().strip()
            with open(path, "w") as f:
                f.write("1")
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.sysctl_old is not None:
            with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
                f.write(self.sysctl_old)
            self.sysctl_old = None
        return False


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


def prog_stats(pid=None, names=None, ids=None):
    """{name: [run_time_ns, run_cnt]} of the BPF programs process `pid` holds (or of the
    program `ids` given), summed by program name; only `names` when given."""
    if ids is None:
        ids = prog_ids(pid)
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, check=True, text=True)
    stats = {}
    for p in json.loads(out.stdout):
        if p.get("id") in ids and (names is None or p.get("name") in names):
            s = stats.setdefault(p.get("name", str(p.get("id"))), [0, 0])
            s[0] += p.get("run_time_ns", 0)
            s[1] += p.get("run_cnt", 0)
    return stats


def stats_delta(after, before):
    """after - before, per program name (programs absent before count from zero)."""
    return {k: [after[k][0] - before.get(k, [0, 0])[0], after[k][1] - before.get(k, [0, 0])[1]] for k in after}


def wait_rusage(p, timeout=None):
    """Waits for Popen `p` with wait4; returns its rusage (the process's whole life: all its
    threads, from exec to exit) and sets p.returncode. On timeout kills it and raises."""
    deadline = None if timeout is None else time.time() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return ru
        if deadline and time.time() > deadline:
            p.kill()
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            raise TimeoutError(f"pid {p.pid} did not exit within {timeout} s (killed)")
        time.sleep(0.01)


def timed(cmd, timeout=None, env=None):
    """Runs cmd; (wall s, rc, stdout, stderr, peak RSS bytes of the process) via wait4."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
    try:
        ru = wait_rusage(p, timeout)
        rc = p.returncode
    except TimeoutError:
        ru, rc = None, -9
    wall = time.time() - t0
    out.seek(0)
    err.seek(0)
    return (wall, rc, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
            ru.ru_maxrss * 1024 if ru else 0)


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


# Segments since schema version 2 store query_ts, latency_ns, answer_ips and questions only where
# the other columns of the row do not give them (crates/schema/src/derived.rs); DuckDB's view
# computes them as dnsql does. The expressions are dnsledger_schema::derived::sql(Duckdb), word
# for word (crates/query's `bench_duckdb_view_derives_like_dnsql` test checks this text).
DUCK_DERIVED = [
    ("query_ts", "coalesce(query_ts, CASE WHEN status <> 'unsolicited' THEN ts END)"),
    ("latency_ns", "coalesce(latency_ns, epoch_ns(response_ts) - epoch_ns(coalesce(query_ts, "
                   "CASE WHEN status <> 'unsolicited' THEN ts END)))"),
    ("answer_ips", "coalesce(answer_ips, CASE WHEN status <> 'lookup' THEN "
                   "[x.data FOR x IN answers IF x.type IN ('A', 'AAAA')] END)"),
    ("questions", "coalesce(questions, CASE WHEN status <> 'lookup' AND qname IS NOT NULL AND "
                  "qtype IS NOT NULL AND qclass IS NOT NULL THEN "
                  "[{'name': qname, 'type': qtype, 'class': qclass}] END)"),
    # Schema version 3: raw messages stored with the DNS ID XORed out, restored.
    ("query_raw", "coalesce(query_raw, unhex(printf('%04x', xor(('0x' || hex(query_raw_x[1:2]))::INTEGER, "
                  "dns_id))) || query_raw_x[3:])"),
    ("response_raw", "coalesce(response_raw, unhex(printf('%04x', xor(('0x' || hex(response_raw_x[1:2]))"
                     "::INTEGER, dns_id))) || response_raw_x[3:])"),
]
# The columns in the files only (dnsledger_schema::derived::FILE_ONLY), with their DuckDB type for
# segments older than them.
DUCK_FILE_ONLY = [("query_raw_x", "BLOB"), ("response_raw_x", "BLOB")]


def duck_dns_view(source):
    """`CREATE VIEW dns AS ...` over `source` (a read_parquet(...) call) with the derived columns
    (the empty UNION ALL BY NAME gives segments older than the file-only columns those, NULL)."""
    replace = ", ".join(f"{expr} AS {col}" for col, expr in DUCK_DERIVED)
    exclude = ", ".join(col for col, _ in DUCK_FILE_ONLY)
    nulls = ", ".join(f"NULL::{t} AS {col}" for col, t in DUCK_FILE_ONLY)
    return (f"CREATE VIEW dns AS SELECT * EXCLUDE ({exclude}) REPLACE ({replace}) FROM "
            f"(SELECT * FROM {source} UNION ALL BY NAME SELECT {nulls} WHERE false)")
