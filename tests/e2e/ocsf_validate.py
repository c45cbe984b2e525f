"""Validates OCSF events against the published OCSF schema, independently of dnsledger.

The schema is OCSF's own export (the JSON that schema.ocsf.io serves for each release),
packaged by the PyPI project `ocsf-json-schema`, which turns a class plus profiles into a JSON
Schema (draft 2020-12); `jsonschema` validates each event against it. Nothing here knows how
dnsledger maps its rows.

usage: ocsf_validate.py VERSION (--json FILE | --parquet FILE)
Prints one JSON object: {"events": N, "invalid": [{"index": i, "errors": [...]}, ...],
"classes": {...}}. Exit status 0 whenever the check ran (the caller judges the result).
"""

import json
import sys

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema


def events_from_json(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def drop_nulls(v):
    """Parquet has a column for every attribute; an absent attribute reads back as NULL."""
    if isinstance(v, dict):
        return {k: drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [drop_nulls(x) for x in v]
    return v


def events_from_parquet(path):
    import duckdb

    rel = duckdb.sql("SELECT * FROM read_parquet(?)", params=[path])
    cols = rel.columns
    for row in rel.fetchall():
        yield drop_nulls(dict(zip(cols, row)))


def main():
    version, kind, path = sys.argv[1], sys.argv[2], sys.argv[3]
    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
    events = events_from_json(path) if kind == "--json" else events_from_parquet(path)
    validators = {}
    invalid = []
    classes = {}
    n = 0
    for i, event in enumerate(events):
        n += 1
        uid = event.get("class_uid")
        profiles = tuple(sorted(event.get("metadata", {}).get("profiles", [])))
        key = (uid, profiles)
        if key not in validators:
            try:
                name = schema.lookup_class_name_from_uid(class_uid=uid)
                js = schema.get_class_schema(class_name=name, profiles=list(profiles))
                validators[key] = Draft202012Validator(js)
            except Exception as e:  # an unknown class is an invalid event
                validators[key] = e
        v = validators[key]
        classes[str(uid)] = classes.get(str(uid), 0) + 1
        if isinstance(v, Exception):
            invalid.append({"index": i, "errors": [f"no OCSF class {uid}: {v}"]})
            continue
        errors = [
            f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
            for e in v.iter_errors(event)
        ]
        if errors:
            invalid.append({"index": i, "errors": errors[:5]})
    print(json.dumps({"events": n, "invalid": invalid[:20], "invalid_count": len(invalid),
                      "classes": classes}))


main()
