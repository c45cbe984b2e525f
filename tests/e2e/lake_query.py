"""Runs SQL scripts printed by `dnsql --print-sql` in a real lake engine, one engine process
for all of them (Spark's JVM starts once).

usage: lake_query.py duckdb|spark SCRIPTS.json LAKE
SCRIPTS.json: [{"name": ..., "sql": ...}, ...]; statements end with ";" at the end of a line.
Prints one JSON object: {"<name>": {"columns": [...], "rows": [[...], ...]} or {"error": "..."}},
plus "__partitions__": the lake read directly with partition discovery (columns, rows per host).
Values: timestamps as RFC 3339 UTC text, dates as YYYY-MM-DD, decimals as floats, bytes as hex.
"""

import datetime
import decimal
import json
import os
import sys


def value(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return v.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, dict):
        return {k: value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [value(x) for x in v]
    if hasattr(v, "asDict"):
        return {k: value(x) for k, x in v.asDict().items()}
    return v


def statements(sql):
    return [s.strip() for s in sql.split(";\n") if s.strip() and not all(
        l.startswith("--") or not l.strip() for l in s.strip().splitlines())]


def run_duckdb(scripts, lake):
    import duckdb

    out = {}
    con = duckdb.connect()
    rel = con.sql(
        "SELECT * FROM read_parquet(?, hive_partitioning = true)", params=[lake + "/**/*.parquet"])
    out["__partitions__"] = {
        "columns": rel.columns,
        "hosts": {h: n for h, n in con.sql(
            "SELECT host, count(*) FROM read_parquet(?, hive_partitioning = true) GROUP BY host",
            params=[lake + "/**/*.parquet"]).fetchall()},
    }
    for s in scripts:
        try:
            res = None
            for st in statements(s["sql"]):
                res = con.sql(st)
            out[s["name"]] = {"columns": res.columns, "rows": [value(list(r)) for r in res.fetchall()]}
        except Exception as e:
            out[s["name"]] = {"error": str(e)}
    return out


def run_spark(scripts, lake):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[1]")
             .config("spark.ui.enabled", "false")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.sql.shuffle.partitions", "1")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    out = {}
    try:
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
        df = spark.read.parquet(lake)
        out["__partitions__"] = {
            "columns": df.columns,
            "hosts": {r[0]: r[1] for r in df.groupBy("host").count().collect()},
        }
        for s in scripts:
            try:
                res = None
                for st in statements(s["sql"]):
                    res = spark.sql(st)
                out[s["name"]] = {"columns": res.columns,
                                  "rows": [value(list(r)) for r in res.collect()]}
            except Exception as e:
                java = getattr(e, "java_exception", None)
                text = str(java) if java is not None else str(e)
                out[s["name"]] = {"error": text[:2000]}
    finally:
        spark.stop()
    return out


def main():
    engine, scripts_file, lake = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(scripts_file, encoding="utf-8") as f:
        scripts = json.load(f)
    out = run_duckdb(scripts, lake) if engine == "duckdb" else run_spark(scripts, lake)
    print(json.dumps(out))


main()
