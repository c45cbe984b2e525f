#!/usr/bin/env python3
"""Runs one SQL query with DuckDB over a dnsledger data directory; prints rows and timing as JSON.

Usage: duck.py DATA_DIR SQL [--values]   (--values: the result rows too, not only their count)

The table `dns` is every segment under <data>/segments (hive partitions host/date/hour), the same
files dnsql reads. `{t}`, `{ts_lo}` and `{ts_hi}` in the SQL are filled in here.
"""
import json
import sys
import time

import duckdb

from benchlib import duck_dns_view  # bench/ is on sys.path: the script's directory

data, sql = sys.argv[1], sys.argv[2]
values = "--values" in sys.argv[3:]
t0 = time.time()
con = duckdb.connect()
con.execute(duck_dns_view(f"read_parquet('{data}/segments/**/*.parquet', hive_partitioning = true)"))
sql = sql.format(t="dns", ts_lo="TIMESTAMPTZ '2026-10-29 12:00:00+00'", ts_hi="TIMESTAMPTZ '2026-10-29 14:00:00+00'")
rows = con.execute(sql).fetchall()
out = {"rows": len(rows), "query_seconds": time.time() - t0}
if values:
    out["values"] = [[v if isinstance(v, (int, float, str, type(None))) else str(v) for v in r] for r in rows]
print(json.dumps(out))
