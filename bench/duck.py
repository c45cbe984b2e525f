#!/usr/bin/env python3
"""Runs one SQL query with DuckDB over a dnsledger data directory; prints rows and timing as JSON.

The table `dns` is every segment under <data>/segments (hive partitions host/date/hour), the same
files dnsql reads. `{t}`, `{ts_lo}` and `{ts_hi}` in the SQL are filled in here.
"""
import json
import sys
import time

import duckdb

data, sql = sys.argv[1], sys.argv[2]
t0 = time.time()
con = duckdb.connect()
con.execute(
    f"CREATE VIEW dns AS SELECT * FROM read_parquet('{data}/segments/**/*.parquet', hive_partitioning = true)"
)
sql = sql.format(t="dns", ts_lo="TIMESTAMPTZ '2026-10-29 12:00:00+00'", ts_hi="TIMESTAMPTZ '2026-10-29 14:00:00+00'")
rows = con.execute(sql).fetchall()
print(json.dumps({"rows": len(rows), "query_seconds": time.time() - t0}))
