"""DuckDB's read_json full-file detection and genson over one JSON-lines file, for examples/ledger-bench.rs.

Prints one JSON object: seconds, versions, DuckDB's detected top-level types, peak RSS.
Needs `pip install duckdb genson`.
"""
import json
import resource
import sys
import time
from importlib.metadata import version

import duckdb
from genson import SchemaBuilder

path = sys.argv[1]
genson_limit_mb = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0

con = duckdb.connect()
con.execute("SET threads = 1")
start = time.perf_counter()
# DESCRIBE runs only the detection; sample_size=-1 makes it read every record.
rows = con.execute(
    "DESCRIBE SELECT * FROM read_json(?, format = 'newline_delimited', sample_size = -1)",
    [path],
).fetchall()
duck_seconds = time.perf_counter() - start
duck_types = {name: typ for name, typ, *_ in rows}

builder = SchemaBuilder()
records = 0
read_bytes = 0
start = time.perf_counter()
with open(path, "rb") as f:
    for line in f:
        builder.add_object(json.loads(line))
        records += 1
        read_bytes += len(line)
        if read_bytes >= genson_limit_mb * 1024 * 1024:
            break
genson_seconds = time.perf_counter() - start

print(json.dumps({
    "duckdb_version": duckdb.__version__,
    "duckdb_seconds": duck_seconds,
    "duckdb_types": duck_types,
    "genson_version": version("genson"),
    "genson_seconds": genson_seconds,
    "genson_records": records,
    "genson_mb": read_bytes / (1024 * 1024),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
