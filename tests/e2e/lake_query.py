"""Runs SQL scripts printed by `dnsql --print-sql` in a real lake engine, one engine process
for all of them (Spark's JVM starts once).

usage: lake_query.py duckdb|spark SCRIPTS.json LAKE [DDL.sql CHECK.sql WORKDIR]
SCRIPTS.json: [{"name": ..., "sql": ...}, ...]; statements end with ";" at the end of a line.
Prints one JSON object: {"<name>": {"columns": [...], "rows": [[...], ...]} or {"error": "..."}},
plus "__partitions__": the lake read directly with partition discovery (columns, rows per host),
and for Spark with DDL.sql (`dnsql schema --ddl athena`): "__ddl__", the result of CHECK.sql
over the table that DDL defines (Spark's Hive support, a Derby metastore under WORKDIR).
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


def run_spark(scripts, lake, ddl=None, check=None, workdir=None):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master("local[1]")
               .config("spark.ui.enabled", "false")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", "1"))
    if ddl:
        builder = (builder
                   .config("spark.sql.warehouse.dir", os.path.join(workdir, "warehouse"))
                   .config("spark.hadoop.javax.jdo.option.ConnectionURL",
                           "jdbc:derby:;databaseName=%s;create=true"
                           % os.path.join(workdir, "metastore"))
                   .enableHiveSupport())
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    out = {}
    try:
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
        df = spark.read.parquet(lake)
        out["__partitions__"] = {
            "columns": df.columns,
            "hosts": {r[0]: r[1] for r in df.groupBy("host").count().collect()},
        }
        if ddl:
            try:
                with open(ddl, encoding="utf-8") as f:
                    for st in statements(f.read()):
                        spark.sql("\n".join(l for l in st.splitlines() if not l.startswith("--")))
                with open(check, encoding="utf-8") as f:
                    res = spark.sql(f.read())
                out["__ddl__"] = {"columns": res.columns,
                                  "rows": [value(list(r)) for r in res.collect()]}
            except Exception as e:
                java = getattr(e, "java_exception", None)
                out["__ddl__"] = {"error": (str(java) if java is not None else str(e))[:2000]}
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
    if engine == "duckdb":
        out = run_duckdb(scripts, lake)
    else:
        out = run_spark(scripts, lake, *sys.argv[4:7])
    print(json.dumps(out))


main()
