"""The ledger's import end to end against DuckDB, side by side on one irregular JSON-lines file.

    python3 bench/ledger/compare.py IMPORT_BINARY [--mb 100] [--file PATH] [--runs 3]

IMPORT_BINARY is the `ledger-import` example (bench/ledger/run.sh builds it in release mode).
The file is generated once (seeded) unless --file names one: events with nested records, arrays
of records, optional fields, a field of mixed kinds (`zip`: integer or string), a renamed field
and a map (`stock`: counts per SKU, keys that are data). Each side runs in its own process, on
one thread (improv reads on one thread and writes on another: CPU seconds, all threads, are
printed beside the wall-clock ones); peak RSS is that process's. The sides alternate for --runs
rounds; the table shows medians (peak RSS: the largest). Then every field's type: improv's
PostgreSQL and SQLite column types beside DuckDB's (a STRUCT's members one by one, as improv gives
a record's fields columns of their own). Needs `pip install duckdb`.
"""
import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

WORDS = "red blue sale new gift eco bulk promo fast b2b trial vip".split()


def event(rng, i):
    uid = rng.randrange(1, 50_000)
    user = {"id": uid, "name": f"user {uid}", "country": rng.choice(["NO", "IT", "DE", "US", "JP"]),
            "since": f"20{rng.randrange(10, 25):02}-{rng.randrange(1, 13):02}-{rng.randrange(1, 29):02}"}
    user["email" if rng.random() < 0.9 else "e_mail"] = f"u{uid}@example.org"
    e = {
        "id": f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.randrange(4096):03x}-a{rng.randrange(4096):03x}-{rng.getrandbits(48):012x}",
        "seq": i,
        "ts": f"2025-{rng.randrange(1, 13):02}-{rng.randrange(1, 29):02}T{rng.randrange(24):02}:{rng.randrange(60):02}:{rng.randrange(60):02}Z",
        "event": rng.choice(["view", "cart", "order", "refund", "signup"]),
        "user": user,
        "items": [{"sku": f"SKU-{rng.randrange(20_000):05}", "qty": rng.randrange(1, 6),
                   "price": rng.randrange(100, 100_000) / 100} for _ in range(rng.randrange(5))],
        "tags": [rng.choice(WORDS) for _ in range(rng.randrange(4))],
        "amount": None if rng.random() < 0.2 else rng.randrange(500_000) / 100,
        "ok": rng.random() < 0.95,
        "note": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 20))),
        "stock": {f"SKU-{rng.randrange(20_000):05}": rng.randrange(100) for _ in range(rng.randrange(4))},
        "zip": rng.randrange(1000, 99_999) if rng.random() < 0.6 else f"{rng.randrange(99_999):05}-{rng.randrange(9)}",
    }
    if rng.random() < 0.3:
        e["referrer"] = f"https://site{rng.randrange(50)}.example/p/{rng.randrange(1000)}"
    if rng.random() < 0.05:
        e["meta"] = {"ab": rng.randrange(3), "flags": {"beta": rng.random() < 0.5}}
    return e


def generate(path, mb):
    rng = random.Random(7)
    written, i = 0, 0
    with open(path, "w") as out:
        while written < mb << 20:
            line = json.dumps(event(rng, i), separators=(",", ":")) + "\n"
            out.write(line)
            written += len(line)
            i += 1


def duckdb_side(path):
    """Runs in a child process: DuckDB's CREATE TABLE AS over the whole file, one thread."""
    import duckdb
    con = duckdb.connect(os.path.join(os.path.dirname(path), "bench.duckdb"))
    con.execute("SET threads = 1")
    start = time.perf_counter()
    cpu_start = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    con.execute("CREATE OR REPLACE TABLE bench AS SELECT * FROM read_json(?, format = 'newline_delimited', sample_size = -1)", [path])
    seconds = time.perf_counter() - start
    cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu_start
    types = {name: typ for name, typ, *_ in con.execute("DESCRIBE bench").fetchall()}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": rss, "types": types, "version": duckdb.__version__}))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--duckdb-child":
        return duckdb_side(sys.argv[2])
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--file")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    path = args.file or os.path.abspath(f"target/ledger-bench-{args.mb}mb.jsonl")
    if not os.path.exists(path):
        print(f"generating {path} ({args.mb} MB)...", file=sys.stderr)
        generate(path, args.mb)
    mib = os.path.getsize(path) / (1 << 20)
    improvs, ducks = [], []
    for _ in range(args.runs):
        improvs.append(json.loads(subprocess.run([args.binary, path], check=True, capture_output=True,
                                                 text=True).stdout))
        ducks.append(json.loads(subprocess.run([sys.executable, __file__, "--duckdb-child", path],
                                               check=True, capture_output=True, text=True).stdout))
    improv, duck = improvs[-1], ducks[-1]

    def median(runs, key):
        return statistics.median(r[key] for r in runs)

    mine, theirs = median(improvs, "seconds"), median(ducks, "seconds")
    print(f"file: {path} ({mib:.1f} MiB, {improv['recorded']} records); medians of {args.runs} runs, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print(f"{'':28}{'improv ledger import':>22}{'DuckDB ' + duck['version']:>22}")
    print(f"{'seconds':28}{mine:>22.2f}{theirs:>22.2f}")
    print(f"{'CPU seconds (all threads)':28}{median(improvs, 'cpu_seconds'):>22.2f}"
          f"{median(ducks, 'cpu_seconds'):>22.2f}")
    print(f"{'MiB/s':28}{mib / mine:>22.1f}{mib / theirs:>22.1f}")
    print(f"{'peak RSS (MB)':28}{max(r['peak_rss_mb'] for r in improvs):>22.0f}"
          f"{max(r['peak_rss_mb'] for r in ducks):>22.0f}")
    print(f"{'improv / DuckDB speed':28}{theirs / mine:>22.2f}x")
    # CPU seconds move less than wall seconds with the load of a shared machine, where two
    # threads of one process seldom get two cores at once.
    print(f"{'improv / DuckDB CPU':28}{median(ducks, 'cpu_seconds') / median(improvs, 'cpu_seconds'):>22.2f}x")
    print_types(improv["columns"], duck["types"])


def split_top(text):
    """Splits `a T, b STRUCT(c U, d V)` at the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += {"(": 1, ")": -1}.get(c, 0)
        if c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def duck_fields(name, typ):
    """DuckDB's type of every field under `name`: a STRUCT's members one by one (as improv gives
    a record's fields columns of their own); anything else, a list of structs included, whole."""
    if typ.startswith("STRUCT(") and typ.endswith(")"):
        for member in split_top(typ[len("STRUCT("):-1]):
            if member.startswith('"'):
                end = member.index('"', 1)
                key, rest = member[1:end], member[end + 1:]
            else:
                key, _, rest = member.partition(" ")
            yield from duck_fields(f"{name}.{key}", rest.strip())
    else:
        yield name, typ


def print_types(columns, duck_types):
    """Every field, improv's PostgreSQL and SQLite column types beside DuckDB's."""
    fields = {}
    for name, typ in duck_types.items():
        fields.update(duck_fields(name, typ))
    print(f"\n{'field':20}{'improv PostgreSQL':32}  {'improv SQLite':13}  DuckDB")
    for path in sorted(set(fields) | set(columns)):
        mine = columns.get(path)
        pg = "(in doc)" if mine is None else mine["postgres"] + (f" -- {mine['label']}" if mine["label"] else "")
        lite = "(in doc)" if mine is None else mine["sqlite"]
        print(f"{path:20}{pg:32}  {lite:13}  {fields.get(path, '(none)')}")

if __name__ == "__main__":
    main()
