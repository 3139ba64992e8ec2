#!/usr/bin/env python3
"""The stage door's benchmark (issue 16): one real `improv serve` with four doors, measured from outside.

Doors: a cron schedule (every minute), an `every = "1s"` door whose probe never changes, a signed
webhook (one delivery every 30 s) and a Telegram chat door against a local fake Bot API that
hands over one message per second (20 senders in turn, each its own chat, so each chat is one
conversation that grows through the run). The model is a local instant mock of the OpenAI Chat
Completions stream: a chat performance calls `reply` once, then ends.

Prints one table:
1. RSS of `improv serve`, read from /proc every 10 s; growth after warm-up (the first 10% of the
   run): the last sample against the sample at the end of warm-up, and the peak after it.
2. Message-in to first reply byte: from the fake writing the getUpdates answer that carries a
   message to the reply's sendMessage arriving, minus the mock model's own time for the
   performance's first request; p50/p99 over every message answered.
3. Model requests made for the idle probed door (its intent carries a marker the mock looks for),
   and the firings of the door: an idle day costs that many requests per day, scaled.

Standard library only, so that it runs wherever python3 does. Written here rather than reusing
improv-mock because the mock serves a fixed script, and this run needs thousands of answers chosen
by what each request asks.
"""

import argparse
import hashlib
import hmac
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SECRET = "bench-hook-secret"
TOKEN = "123456:bench"
SENDERS = 20
PROBE_MARKER = "IDLE-PROBE-DOOR"
TAG = re.compile(r"\bmsg-(\d+)\b")


class Fake:
    """The fake platform and the mock model's shared state."""

    def __init__(self):
        self.lock = threading.Condition()
        self.pending = []  # updates not yet confirmed by an offset
        self.next_update = 1
        self.handed = {}  # message id -> monotonic time its getUpdates answer was written
        self.replied = {}  # message id -> monotonic time its sendMessage arrived
        self.model_time = {}  # message id -> seconds the mock spent on its first request
        self.model_requests = 0
        self.probe_requests = 0
        self.sent = 0

    def feed(self, message_id):
        sender = message_id % SENDERS
        update = {
            "update_id": self.next_update,
            "message": {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": 1000 + sender, "type": "private"},
                "from": {"id": 1000 + sender, "is_bot": False, "username": f"u{sender}"},
                "text": f"msg-{message_id}: what time is it where you are?",
            },
        }
        with self.lock:
            self.next_update += 1
            self.pending.append(update)
            self.lock.notify_all()


FAKE = Fake()


def sse_turn(text=None, call=None):
    """An OpenAI Chat Completions stream saying `text` or calling `call` = (name, args)."""

    def chunk(choices, usage=None):
        return "data: " + json.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1760000000,
            "model": "bench", "choices": choices, "usage": usage}) + "\n\n"

    def delta(d, finish=None):
        return chunk([{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}])

    out = [delta({"role": "assistant", "content": None if call else ""})]
    if call:
        out.append(delta({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                          "function": {"name": call[0], "arguments": call[1]}}]}))
        out.append(delta({}, "tool_calls"))
    else:
        out.append(delta({"content": text}))
        out.append(delta({}, "stop"))
    out.append(chunk([], {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}))
    out.append("data: [DONE]\n\n")
    return "".join(out).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, kind="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.endswith("/chat/completions"):
            return self.model(json.loads(body))
        if self.path.endswith("/getUpdates"):
            return self.get_updates(json.loads(body))
        if self.path.endswith("/sendMessage"):
            return self.send_message(json.loads(body))
        self.send(404, b'{"ok":false,"description":"not found"}')

    def model(self, req):
        start = time.monotonic()
        if os.environ.get("DOORBENCH_DUMP"):
            with open(os.environ["DOORBENCH_DUMP"], "a") as f:
                f.write(json.dumps(req) + "\n")
        messages = req.get("messages", [])
        text = json.dumps(messages)
        tools = [t.get("function", {}).get("name") for t in req.get("tools", [])]
        last = messages[-1] if messages else {}
        answered = last.get("role") == "tool"
        tag = None
        for m in reversed(messages):
            found = TAG.findall(str(m.get("content") or ""))
            if found:
                tag = int(found[-1])
                break
        if "reply" in tools and not answered and tag is not None:
            out = sse_turn(call=("reply", json.dumps({"text": f"It is noon for msg-{tag}."})))
        else:
            out = sse_turn(text="Done.")
        spent = time.monotonic() - start
        with FAKE.lock:
            FAKE.model_requests += 1
            if PROBE_MARKER in text:
                FAKE.probe_requests += 1
            if tag is not None and not answered:
                FAKE.model_time.setdefault(tag, spent)
        if req.get("stream", False):
            self.send(200, out, "text/event-stream")
        else:
            msg = {"role": "assistant", "content": "Done."}
            self.send(200, json.dumps({"id": "c", "object": "chat.completion", "created": 1,
                                       "model": "bench", "choices": [{"index": 0, "message": msg,
                                       "finish_reason": "stop"}], "usage": {"prompt_tokens": 1,
                                       "completion_tokens": 1, "total_tokens": 2}}).encode())

    def get_updates(self, req):
        offset = int(req.get("offset", 0))
        deadline = time.monotonic() + min(float(req.get("timeout", 0)), 25.0)
        with FAKE.lock:
            FAKE.pending = [u for u in FAKE.pending if u["update_id"] >= offset]
            while not FAKE.pending and time.monotonic() < deadline:
                FAKE.lock.wait(deadline - time.monotonic())
            updates = list(FAKE.pending)
            # Stamped before the answer is written, so the overhead is never understated.
            now = time.monotonic()
            for u in updates:
                FAKE.handed.setdefault(u["message"]["message_id"], now)
        self.send(200, json.dumps({"ok": True, "result": updates}).encode())

    def send_message(self, req):
        now = time.monotonic()
        with FAKE.lock:
            FAKE.sent += 1
            sent = FAKE.sent
            to = req.get("reply_to_message_id")
            if to is not None:
                FAKE.replied.setdefault(int(to), now)
        result = {"message_id": 500000 + sent, "date": int(time.time()),
                  "chat": {"id": int(req.get("chat_id", 0)), "type": "private"},
                  "text": req.get("text", "")}
        self.send(200, json.dumps({"ok": True, "result": result}).encode())


def stage(root, port, compact_at=None):
    allow = ", ".join(f'"@u{i}"' for i in range(SENDERS))
    # The mock model names no context window, so without `compact_at` a thread's history is
    # never compacted and every message's performance carries its whole thread.
    context = f"\n[context]\ncompact_at = {compact_at}\n" if compact_at else ""
    (root / "probe.txt").write_text("nothing new\n")
    (root / "stage.toml").write_text(f"""[stage]
name = "doorbench"
intent = "Wait."
{context}
[[actor]]
name = "lead"
model = "openai/bench-model"

[[door]]
name = "tick"
schedule = "* * * * *"
intent = "Say the time."

[[door]]
name = "watch"
every = "1s"
probe = ["cat probe.txt"]
intent = "{PROBE_MARKER}: something changed: {{probe_diff}}."

[[door]]
name = "hook"
webhook = "/doors/hook"
secret_env = "BENCH_HOOK_SECRET"
intent = "Look at the delivery."

[[door]]
name = "chat"
channel = "telegram"
token_env = "BENCH_TELEGRAM_TOKEN"
api_base = "http://127.0.0.1:{port}"
allow = [{allow}]
# One message a second is 60 a minute: above the door's default rate (30/min), which would turn
# half of them away by design. The bench measures the door, not its limiter.
rate = "120/min"
""")


def rss_kb(pid):
    """(resident, anonymous, file-backed) kB of `pid`, its threads and the machine's load: anonymous
    memory is the heap and stacks, file-backed is the binary's and libraries' pages, which grow as
    new code paths first run and are not a leak; threads and load tell a step in memory that came
    with a burst of work (a busy machine answers slower, so more messages are in flight at once)
    from one that did not."""
    found = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":")[0]
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
                    found[key] = int(line.split()[1])
    except OSError:
        pass
    return (found.get("VmRSS", 0), found.get("RssAnon", 0),
            found.get("RssFile", 0) + found.get("RssShmem", 0), found.get("Threads", 0),
            os.getloadavg()[0])


def start_serve(improv, root, port, log):
    env = dict(os.environ, OPENAI_API_KEY="bench-key", OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
               BENCH_HOOK_SECRET=SECRET, BENCH_TELEGRAM_TOKEN=TOKEN, NO_COLOR="1",
               TMPDIR=str(root / "tmp"))
    env.pop("ANTHROPIC_API_KEY", None)
    env.pop("IMPROV_STORE", None)
    child = subprocess.Popen([improv, "serve", "--bind", "127.0.0.1:0"], cwd=root, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    host = []
    ready = threading.Event()

    def drain():
        for line in child.stderr:
            log.write(line)
            log.flush()
            if "serving the stage view at http://" in line and not host:
                host.append(line.split("http://")[1].strip().rstrip("/"))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(120) or not host:
        child.kill()
        sys.exit(f"improv serve did not start; its log is {log.name}")
    return child, host[0]


def deliver(host, n):
    body = json.dumps({"ref": "refs/heads/main", "n": n}).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(f"http://{host}/doors/hook", data=body, method="POST", headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push",
        "X-GitHub-Delivery": f"d{n}", "X-Hub-Signature-256": sig})
    try:
        urllib.request.urlopen(req, timeout=30).read()
        return True
    except Exception:
        return False


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--improv", default="target/release/improv")
    ap.add_argument("--compact-at", type=int, default=None, metavar="TOKENS",
                    help="compact each chat thread's history at this many tokens ([context] "
                         "compact_at); without it the threads grow through the whole run")
    args = ap.parse_args()
    improv = os.path.abspath(args.improv)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="doorbench-") as tmp:
        root = Path(os.environ.get("DOORBENCH_KEEP") or tmp)
        (root / "tmp").mkdir()
        stage(root, port, args.compact_at)
        log = open(root / "serve.log", "w")
        child, host = start_serve(improv, root, port, log)
        duration = args.minutes * 60
        started = time.monotonic()
        samples = []  # (seconds since start, RSS, anonymous, file-backed kB)
        hooks_ok = hooks = 0
        n = 0
        next_sample = started
        while time.monotonic() - started < duration and child.poll() is None:
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - started, *rss_kb(child.pid)))
                next_sample += 10
            n += 1
            FAKE.feed(n)
            if n % 30 == 0:
                hooks += 1
                hooks_ok += deliver(host, n)
            time.sleep(max(0.0, started + n - time.monotonic()))
        samples.append((time.monotonic() - started, *rss_kb(child.pid)))
        time.sleep(5)  # let the last messages be answered
        died = child.poll()
        child.terminate()
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
        report(args.minutes, samples, n, hooks, hooks_ok, died, root)
        if os.environ.get("DOORBENCH_DUMP"):
            print((root / "serve.log").read_text()[-3000:])


def firings(root):
    """Per door: (firings recorded, firings that started a performance), from the doors' store."""
    db = sqlite3.connect(root / ".improv" / "doors.db")
    try:
        rows = db.execute("SELECT door, COUNT(*), COUNT(performance) FROM firings GROUP BY door")
        return {door: (total, performed) for door, total, performed in rows}
    finally:
        db.close()


def report(minutes, samples, fed, hooks, hooks_ok, died, root):
    fired = firings(root)
    warm_end = minutes * 60 * 0.10
    after = [s for s in samples if s[0] >= warm_end]
    base_s = after[0] if after else samples[-1]
    base, last = base_s[1], samples[-1][1]
    peak = max(s[1] for s in after) if after else last
    with FAKE.lock:
        overheads = [(FAKE.replied[m] - FAKE.handed[m] - FAKE.model_time.get(m, 0.0)) * 1000
                     for m in FAKE.replied if m in FAKE.handed]
        answered = len(FAKE.replied)
        probe_requests, model_requests = FAKE.probe_requests, FAKE.model_requests
    print(f"\nimprov serve, four doors, {minutes:g} min, {fed} chat messages fed (1/s), "
          f"{hooks_ok}/{hooks} webhook deliveries accepted, {model_requests} model requests")
    if died is not None:
        print(f"WARNING: improv serve exited early with {died}; see {root}/serve.log")
    print("| measure | result | goal |")
    print("|---|---|---|")
    print(f"| RSS at end of warm-up ({warm_end / 60:.1f} min) | {base / 1024:.1f} MB | |")
    print(f"| RSS at end | {last / 1024:.1f} MB | |")
    print(f"| RSS growth after warm-up (end / peak) | {100 * (last - base) / base:+.1f}% / "
          f"{100 * (peak - base) / base:+.1f}% | < 10% |")
    if overheads:
        print(f"| message-in to reply, minus the mock (n={len(overheads)} of {fed}) | p50 "
              f"{statistics.median(overheads):.1f} ms, p99 {pct(overheads, 99):.1f} ms | |")
    else:
        print(f"| message-in to reply | no message was answered; see {root}/serve.log | |")
    watch, performed = fired.get("watch", (0, 0))
    print(f"| model requests for the idle probed door (every 1s: {watch} firings probed, "
          f"{performed} performed; {watch / 48:.1f} idle days at every = \"30m\") | "
          f"{probe_requests} | 0 |")
    tick = fired.get("tick", (0, 0))
    print(f"| schedule door (every minute) firings / performed | {tick[0]} / {tick[1]} | |")
    anon_base, anon_last = base_s[2], samples[-1][2]
    print(f"| anonymous memory (heap, stacks) after warm-up: {anon_base / 1024:.1f} -> "
          f"{anon_last / 1024:.1f} MB | {100 * (anon_last - anon_base) / max(1, anon_base):+.1f}% | |")
    rows(minutes, samples, warm_end)
    if answered < fed * 0.9:
        print(f"NOTE: only {answered} of {fed} messages were answered")


def rows(minutes, samples, warm_end):
    """RSS at the end of warm-up and every tenth of the run (every 10 minutes of an hour), split
    into anonymous and file-backed memory, so that what grows can be told apart."""
    marks = [warm_end] + [minutes * 60 * k / 6 for k in range(1, 7)]
    base = min(samples, key=lambda s: abs(s[0] - warm_end))[1]
    print("\n| minute | RSS MB | anonymous MB | file-backed MB | RSS vs warm-up | most threads, "
          "highest load since the last row |")
    print("|---|---|---|---|---|---|")
    last = 0.0
    for mark in marks:
        t, rss, anon, filed, _, _ = min(samples, key=lambda s: abs(s[0] - mark))
        since = [s for s in samples if last <= s[0] <= t] or [samples[-1]]
        last = t
        print(f"| {t / 60:.1f} | {rss / 1024:.1f} | {anon / 1024:.1f} | {filed / 1024:.1f} | "
              f"{100 * (rss - base) / max(1, base):+.1f}% | {max(s[4] for s in since)}, "
              f"{max(s[5] for s in since):.1f} |")
    print("\nRSS samples (min, MB): " + " ".join(f"{s[0] / 60:.1f}:{s[1] / 1024:.1f}"
                                                 for s in samples[:: max(1, len(samples) // 24)]))


if __name__ == "__main__":
    main()
