// The improv stage view: performances listed, one performance live (a lane per actor, turns and
// tool calls with durations, streaming text, meters, checks, approvals, notes), the ledger.
// Plain JS, no build step. Events are folded into row models as they arrive; the DOM is
// touched once per animation frame and each lane renders at most `cap` rows, so a performance
// of tens of thousands of events stays smooth.
"use strict";

const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = "improv.token";
const ROW_CAP = 300;

// ---- token and API ---------------------------------------------------------------------------

// `#token=T` and `#/p/ID&token=T` (the link `improv serve` prints, or one a user shares with
// its token): keep the token, drop it from the address, and go where the rest of the link says.
function takeTokenFromHash() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (!m) return;
  localStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  let rest = location.hash.replace(/(^#|&)token=[^&]*/, "$1").replace(/^#&/, "#").replace(/&$/, "");
  if (rest === "#" || rest === "") rest = "#/";
  history.replaceState(null, "", location.pathname + location.search + rest);
}

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, options.headers || {});
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    signal: options.signal,
  });
  if (res.status === 401) {
    showToken("The token was refused; paste the one from the token file.");
    throw new Unauthorized();
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: { message: text } }; }
  if (!res.ok) throw new Error((data && data.error && data.error.message) || res.statusText);
  return data;
}

// Reads a Server-Sent Events response with fetch (so the token goes in a header).
async function readSse(path, lastId, onFrame, signal) {
  const headers = { Authorization: "Bearer " + token(), Accept: "text/event-stream" };
  if (lastId !== null && lastId !== undefined) headers["Last-Event-ID"] = String(lastId);
  const res = await fetch(path, { headers, signal });
  if (res.status === 401) { showToken("The token was refused."); throw new Unauthorized(); }
  if (!res.ok) throw new Error("events: " + res.status);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let frame = { id: null, event: "message", data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (frame.data.length) onFrame(frame.event, frame.id, frame.data.join("\n"));
        frame = { id: null, event: "message", data: [] };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "data") frame.data.push(val);
      else if (field === "event") frame.event = val;
      else if (field === "id") frame.id = val;
    }
  }
}

// ---- small DOM helpers -----------------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function fmtMs(ms) {
  if (ms === undefined || ms === null || isNaN(ms)) return "";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.floor(ms / 60000) + " m " + Math.round((ms % 60000) / 1000) + " s";
}

function fmtNum(n) {
  if (n === undefined || n === null) return "0";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(n);
}

function short(text, n) {
  text = String(text || "");
  return text.length > n ? text.slice(0, n) + "…" : text;
}

function showError(sel, message) {
  const e = $(sel);
  if (!message) { e.hidden = true; return; }
  e.textContent = message;
  e.hidden = false;
}

function setConn(state) {
  const c = $("#conn");
  c.dataset.state = state;
  c.textContent = state;
}

// ---- views -----------------------------------------------------------------------------------

let stage = null;
let current = null; // the open performance view
let listTimer = null;

function showView(id) {
  $("#boot").hidden = true;
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== id;
  for (const a of document.querySelectorAll("nav a")) {
    const nav = id === "ledger-view" ? "ledger" : id === "routines-view" ? "routines" : "performances";
    a.classList.toggle("active", a.dataset.nav === nav);
  }
}

function showToken(message) {
  if (current) { current.close(); current = null; }
  showView("token-view");
  showError("#token-error", message || "");
}

async function route() {
  takeTokenFromHash(); // a link with a token pasted into an open page
  if (!token()) { showToken(); return; }
  if (current) { current.close(); current = null; }
  clearInterval(listTimer);
  try {
    if (!stage) {
      stage = await api("/stage");
      $("#stage-name").textContent = stage.name;
      document.title = "improv · " + stage.name;
      if (!$("#intent").value && stage.intent) $("#intent").placeholder = "Intent (default: " + stage.intent + ")";
    }
    const hash = location.hash || "#/";
    const m = hash.match(/^#\/p\/([A-Za-z0-9_-]{1,128})$/);
    if (m) {
      showView("perf-view");
      current = new PerformanceView(m[1]);
    } else if (hash === "#/ledger") {
      showView("ledger-view");
      await renderLedger();
    } else if (hash === "#/routines") {
      showView("routines-view");
      await renderRoutines();
    } else {
      showView("list-view");
      await renderList();
      listTimer = setInterval(() => renderList().catch(() => {}), 3000);
    }
  } catch (e) {
    if (e instanceof Unauthorized) return;
    setConn("error: " + e.message);
    // Say so where the reader looks, rather than loading forever.
    const boot = $("#boot");
    if (!boot.hidden) { boot.classList.remove("loading"); boot.classList.add("error"); boot.textContent = "Cannot reach the stage: " + e.message; }
  }
}

// ---- performance list ------------------------------------------------------------------------

async function renderList() {
  const data = await api("/performances?limit=200");
  const body = $("#perf-rows");
  body.textContent = "";
  for (const p of data.performances) {
    const tr = el("tr", "perf-row");
    tr.dataset.id = p.id;
    const status = el("td");
    const badge = el("span", "badge " + p.status, p.status);
    status.append(badge);
    if (p.approvals && p.approvals.length) status.append(el("span", "badge ask", p.approvals.length + " waiting"));
    const intent = el("td", "intent");
    const link = el("a", "perf-link", short(p.intent, 120) || "(no intent)");
    link.href = "#/p/" + p.id;
    intent.append(link);
    tr.append(status, intent, el("td", "num", p.turns),
      el("td", "num", fmtNum(p.input_tokens + p.output_tokens)), el("td", "num", "$" + (p.cost_usd || 0).toFixed(4)),
      el("td", "muted", (p.started_at || "").replace("T", " ").slice(0, 19)), el("td", "mono muted", p.id));
    tr.addEventListener("click", (ev) => { if (!ev.target.closest("a")) location.hash = "#/p/" + p.id; });
    body.append(tr);
  }
  $("#list-loading").hidden = true;
  $("#list-empty").hidden = data.performances.length > 0;
  setConn("connected");
}

async function startPerformance(ev) {
  ev.preventDefault();
  showError("#start-error", "");
  const body = {};
  const intent = $("#intent").value.trim();
  const model = $("#model").value.trim();
  if (intent) body.intent = intent;
  if (model) body.model = model;
  try {
    const started = await api("/performances", { method: "POST", body });
    $("#intent").value = "";
    location.hash = "#/p/" + started.id;
  } catch (e) {
    if (!(e instanceof Unauthorized)) showError("#start-error", e.message);
  }
}

// ---- one performance, live -------------------------------------------------------------------

class Lane {
  constructor(name, container) {
    this.name = name;
    this.rows = [];
    this.cap = ROW_CAP;
    this.root = el("div", "lane");
    this.root.dataset.actor = name;
    this.head = el("div", "lane-head");
    this.more = el("button", "more", "");
    this.more.hidden = true;
    this.more.addEventListener("click", () => { this.cap += ROW_CAP; this.rebuild = true; schedule(); });
    this.head.append(el("span", "lane-name", name), this.more);
    this.list = el("div", "rows");
    this.root.append(this.head, this.list);
    container.append(this.root);
    this.rebuild = false;
  }

  add(row) {
    row.lane = this;
    this.rows.push(row);
    row.dirty = true;
    return row;
  }

  flush() {
    const start = Math.max(0, this.rows.length - this.cap);
    if (this.rebuild) {
      this.list.textContent = "";
      for (const r of this.rows) r.el = null;
      this.rebuild = false;
    }
    // Rows that left the window give up their elements.
    while (this.list.firstChild && this.list.firstChild.__index < start) {
      const first = this.list.firstChild;
      this.rows[first.__index].el = null;
      first.remove();
    }
    const frag = document.createDocumentFragment();
    for (let i = start; i < this.rows.length; i++) {
      const r = this.rows[i];
      if (!r.el) {
        r.el = el("div", "row");
        r.el.__index = i;
        r.dirty = true;
        frag.append(r.el);
      }
    }
    this.list.append(frag);
    for (let i = start; i < this.rows.length; i++) {
      const r = this.rows[i];
      if (r.dirty && r.el) { renderRow(r); r.dirty = false; }
    }
    this.more.hidden = start === 0;
    this.more.textContent = "show " + Math.min(ROW_CAP, start) + " earlier of " + start + " hidden";
  }
}

function renderRow(r) {
  const e = r.el;
  e.className = "row " + r.kind + (r.state ? " " + r.state : "");
  e.textContent = "";
  const head = el("div", "row-head");
  head.append(el("span", "kind", r.label));
  if (r.title) head.append(el("span", "title", r.title));
  if (r.duration !== undefined) head.append(el("span", "dur", fmtMs(r.duration)));
  e.append(head);
  if (r.args) e.append(renderArgs(r.args));
  if (r.body) {
    const b = el(r.pre ? "pre" : "div", "row-body", r.body);
    e.append(b);
  }
  if (r.detail !== undefined && r.detail !== "") {
    const d = el("details", "row-detail");
    const lines = r.detail.replace(/\n$/, "").split("\n").length;
    d.append(el("summary", null, (r.detailLabel || "output") + (lines > 1 ? " · " + lines + " lines" : "")), el("pre", null, r.detail));
    // Short outputs and every failure are worth reading at once; long ones wait for a click.
    d.open = r.open !== undefined ? r.open : r.state === "failed" || (lines <= 8 && r.detail.length <= 600);
    e.append(d);
  }
  if (r.link) {
    const a = el("a", "row-link", r.link.text);
    a.href = r.link.href;
    e.append(a);
  }
}

// A tool call's arguments as `key: value` lines: strings as they are (no quotes, no \n),
// anything else as compact JSON; arguments that are not a JSON object stay as they came.
function parseArgs(text) {
  try {
    const v = JSON.parse(text);
    if (v && typeof v === "object" && !Array.isArray(v)) return v;
  } catch (_) { /* not JSON: shown as text */ }
  return null;
}

function renderArgs(args) {
  const dl = el("dl", "args");
  for (const [key, value] of Object.entries(args)) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    dl.append(el("dt", null, key), el("dd", null, short(text, 600)));
  }
  return dl;
}

let pending = false;
const dirtyViews = new Set();
function schedule(view) {
  if (view) dirtyViews.add(view);
  else if (current) dirtyViews.add(current);
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    for (const v of dirtyViews) v.flush();
    dirtyViews.clear();
  });
}

class PerformanceView {
  constructor(id) {
    this.id = id;
    this.lanes = new Map();
    this.calls = new Map();
    this.turns = new Map();
    this.text = new Map();
    this.approvals = new Map();
    this.lastId = null;
    this.ended = false;
    this.spent = { turns: 0, input_tokens: 0, output_tokens: 0, cost_usd: 0, tool_calls: 0, elapsed_ms: 0 };
    this.status = "loading";
    this.loaded = false;
    this.follow = false;
    this.reason = "";
    this.intent = "";
    this.count = 0;
    this.abort = new AbortController();
    $("#lanes").textContent = "";
    $("#approvals").textContent = "";
    $("#perf-id").textContent = id;
    $("#perf-intent").textContent = "";
    $("#perf-reason").textContent = "";
    showError("#perf-error", "");
    for (const a of (stage && stage.actors) || []) this.lane(a.name);
    this.load();
    this.flush();
  }

  // The summary first (status, intent, spent so far), then the events: until it answers, the
  // page says it is loading rather than showing a running performance with empty meters.
  async load() {
    try {
      const p = await api("/performances/" + this.id, { signal: this.abort.signal });
      this.intent = p.intent || "";
      this.status = p.status;
      this.reason = p.reason || "";
      Object.assign(this.spent, { turns: p.turns, input_tokens: p.input_tokens, output_tokens: p.output_tokens,
        cost_usd: p.cost_usd, elapsed_ms: p.elapsed_ms });
      // Follow the newest rows of a live performance; a finished one opens at its start.
      this.follow = p.status === "running";
    } catch (e) {
      if (e instanceof Unauthorized || this.abort.signal.aborted) return;
      this.status = "unknown";
      this.loaded = true;
      showError("#perf-error", "Cannot open performance " + this.id + ": " + e.message);
      schedule(this);
      return;
    }
    this.loaded = true;
    schedule(this);
    this.connect();
  }

  // Notes and Stop only mean something while the performance runs.
  live() {
    return this.loaded && !this.ended && this.status === "running";
  }

  close() {
    this.abort.abort();
  }

  lane(name) {
    name = name || (stage && stage.lead) || "lead";
    let lane = this.lanes.get(name);
    if (!lane) {
      lane = new Lane(name, $("#lanes"));
      this.lanes.set(name, lane);
    }
    return lane;
  }

  async connect() {
    let delay = 500;
    while (!this.ended && !this.abort.signal.aborted) {
      try {
        setConn("live");
        await readSse("/performances/" + this.id + "/events", this.lastId, (ev, id, data) => this.frame(ev, id, data), this.abort.signal);
        delay = 500;
      } catch (e) {
        if (e instanceof Unauthorized || this.abort.signal.aborted) return;
        showError("#perf-error", e.message);
      }
      if (this.ended || this.abort.signal.aborted) break;
      setConn("reconnecting");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
    if (!this.abort.signal.aborted) setConn("ended");
  }

  frame(event, id, data) {
    let v;
    try { v = JSON.parse(data); } catch (_) { return; }
    if (event === "message") {
      if (id !== null) this.lastId = id;
      this.event(v);
    } else if (event === "approval") {
      this.approvals.set(v.approval, v);
      this.approvalsDirty = true;
    } else if (event === "approval_answered") {
      this.approvals.delete(v.approval);
      this.approvalsDirty = true;
    } else if (event === "end") {
      this.ended = true;
      this.follow = false;
      this.status = v.outcome;
      this.reason = v.reason;
      if (v.spent) this.spent = v.spent;
      this.approvals.clear();
      this.approvalsDirty = true;
    } else if (event === "error") {
      showError("#perf-error", v.error && v.error.message);
    }
    schedule(this);
  }

  event(e) {
    this.count++;
    const lane = this.lane(e.actor);
    const key = e.actor || "";
    switch (e.type) {
      case "performance_started":
        this.intent = e.intent;
        lane.add({ kind: "start", label: e.resumed ? "resumed" : "started", title: e.model, at: e.at });
        break;
      case "director_note":
        lane.add({ kind: "note", label: "director", body: e.text });
        break;
      case "outside_message":
        lane.add({ kind: "note", label: "from " + e.from + " (outside)", body: e.text });
        break;
      case "turn_started": {
        const r = lane.add({ kind: "turn", label: "turn " + e.turn, at: Date.parse(e.at) });
        this.turns.set(key, r);
        this.text.delete(key);
        break;
      }
      case "text_delta": {
        let r = this.text.get(key);
        if (!r) { r = lane.add({ kind: "text", label: "says", body: "" }); this.text.set(key, r); }
        r.body += e.text;
        r.dirty = true;
        break;
      }
      case "model_replied": {
        let r = this.text.get(key);
        if (e.text) {
          if (!r) { r = lane.add({ kind: "text", label: "says", body: "" }); }
          r.body = e.text;
          r.dirty = true;
        }
        this.text.delete(key);
        const t = this.turns.get(key);
        if (t) {
          t.duration = Date.parse(e.at) - t.at;
          t.title = e.tool_calls && e.tool_calls.length ? e.tool_calls.length + " call(s)" : e.stop;
          t.dirty = true;
        }
        break;
      }
      case "model_retry":
        lane.add({ kind: "warn", label: "retry", title: "attempt " + e.attempt + " in " + fmtMs(e.delay_ms), body: e.reason });
        break;
      case "usage":
        this.spent = e.spent;
        break;
      case "tool_call_started": {
        const args = parseArgs(e.arguments);
        const r = lane.add(args ? { kind: "tool", state: "running", label: e.name, args }
          : { kind: "tool", state: "running", label: e.name, body: short(e.arguments, 400), pre: true });
        this.calls.set(e.call_id, r);
        break;
      }
      case "tool_call_finished": {
        let r = this.calls.get(e.call_id);
        if (!r) r = lane.add({ kind: "tool", label: e.name });
        r.state = e.ok ? "ok" : "failed";
        r.duration = e.duration_ms;
        r.detail = short(e.output, 4000);
        r.dirty = true;
        this.calls.delete(e.call_id);
        break;
      }
      case "policy_decision":
        // A call no rule matched is allowed by default: nothing worth a row.
        if (e.decision === "allow" && e.rule === "default") break;
        lane.add({ kind: "policy", state: /^(allow|approved)/.test(e.decision) ? "ok" : "failed", label: e.decision,
          title: e.prop + ": " + short(e.subject, 120), body: e.note || e.rule });
        break;
      case "budget_warning":
        lane.add({ kind: "warn", label: "budget", title: e.budget + " at " + Math.round((100 * e.used) / e.limit) + "%" });
        break;
      case "sandbox_started":
        // The same on every run: one quiet line, the details behind a click.
        lane.add({ kind: "sandbox", label: "sandbox", title: e.enforced ? "enforced" : "off",
          detail: e.description || "", detailLabel: "details", open: false });
        break;
      case "check_finished":
        lane.add({ kind: "check", state: e.passed ? "ok" : "failed", label: "check " + e.check,
          title: "attempt " + e.attempt + " · " + e.on, duration: e.duration_ms, detail: short(e.output, 4000), detailLabel: "verdict" });
        break;
      case "attempt_finished":
        lane.add({ kind: "attempt", state: e.passed ? "ok" : "failed", label: "attempt " + e.attempt + "/" + e.max_attempts,
          title: e.passed ? "passed" : "failed: " + (e.failed || []).join(", ") });
        this.attempts = e.attempt + "/" + e.max_attempts;
        break;
      case "cue_started":
        lane.add({ kind: "cue", label: "cue → " + e.to, body: short(e.task, 300), link: { text: "open " + e.performance, href: "#/p/" + e.performance } });
        break;
      case "cue_finished":
        lane.add({ kind: "cue", state: e.outcome === "done" || e.outcome === "converged" ? "ok" : "failed", label: "cue ← " + e.to, title: e.outcome });
        break;
      case "board_note":
        lane.add({ kind: "board", label: "board", title: e.author, body: e.text });
        break;
      case "compacted":
        lane.add({ kind: "info", label: "compacted", title: e.messages + " messages, " + fmtNum(e.tokens_before) + " → " + fmtNum(e.tokens_after) + " tokens" });
        break;
      case "performance_finished":
        this.status = e.outcome;
        this.reason = e.reason;
        this.spent = e.spent;
        lane.add({ kind: "end", state: e.outcome === "done" || e.outcome === "converged" ? "ok" : "failed", label: e.outcome, body: e.reason });
        break;
      default:
        lane.add({ kind: "info", label: e.type });
    }
  }

  flush() {
    $("#perf-view").dataset.state = this.loaded ? (this.live() ? "live" : "over") : "loading";
    $("#perf-intent").textContent = this.loaded ? this.intent || "" : "Loading…";
    const s = $("#perf-status");
    s.className = "badge " + this.status;
    s.textContent = this.status;
    $("#perf-reason").textContent = this.reason ? "· " + this.reason : "";
    $(".perf-actions").hidden = !this.live();
    $("#meters").hidden = !this.loaded;
    $("#lanes").hidden = !this.loaded;
    if (this.loaded) this.renderMeters();
    if (this.approvalsDirty) { this.renderApprovals(); this.approvalsDirty = false; }
    // The page is the one scroll container: it follows the newest rows of a live performance
    // while the reader is at the bottom, and stays where the reader put it otherwise.
    const page = document.scrollingElement;
    const stick = this.follow && page.scrollHeight - page.scrollTop - page.clientHeight < 40;
    for (const lane of this.lanes.values()) lane.flush();
    if (stick) page.scrollTop = page.scrollHeight;
    $("#lanes").dataset.events = String(this.count);
  }

  renderMeters() {
    const b = (stage && stage.budget) || {};
    const sp = this.spent || {};
    const meters = [
      ["turns", sp.turns, b.max_turns, String],
      ["input tokens", sp.input_tokens, b.max_input_tokens, fmtNum],
      ["output tokens", sp.output_tokens, b.max_output_tokens, fmtNum],
      ["tool calls", sp.tool_calls, b.max_tool_calls, String],
      ["cost", sp.cost_usd, b.max_cost_usd, (x) => "$" + (x || 0).toFixed(4)],
      ["time", sp.elapsed_ms, b.timeout_ms, fmtMs],
    ];
    const root = $("#meters");
    root.textContent = "";
    for (const [name, used, limit, fmt] of meters) {
      const m = el("div", "meter");
      m.append(el("span", "meter-name", name), el("span", "meter-value", fmt(used || 0) + (limit ? " / " + fmt(limit) : "")));
      const bar = el("div", "bar");
      const fill = el("div", "fill");
      const ratio = limit ? Math.min(1, (used || 0) / limit) : 0;
      fill.style.width = (ratio * 100).toFixed(1) + "%";
      if (ratio >= 0.8) fill.classList.add("hot");
      bar.append(fill);
      if (!limit) bar.classList.add("unlimited");
      m.append(bar);
      root.append(m);
    }
    if (this.attempts) {
      const m = el("div", "meter");
      m.append(el("span", "meter-name", "attempts"), el("span", "meter-value", this.attempts));
      root.append(m);
    }
  }

  renderApprovals() {
    const root = $("#approvals");
    root.textContent = "";
    for (const a of this.approvals.values()) {
      const card = el("div", "approval card");
      card.dataset.approval = a.approval;
      card.append(el("div", "approval-q", a.actor + " wants to use " + a.prop), el("pre", "approval-subject", a.subject), el("div", "muted", a.rule));
      const note = el("input", "approval-note");
      note.placeholder = "note to the actor (with deny)";
      const buttons = el("div", "approval-buttons");
      for (const [answer, label, cls] of [["once", "Approve once", ""], ["performance", "Approve for this performance", ""], ["deny", "Deny", "danger"]]) {
        const btn = el("button", cls, label);
        btn.dataset.answer = answer;
        btn.addEventListener("click", async () => {
          btn.disabled = true;
          try {
            await api("/performances/" + this.id + "/approvals/" + a.approval, { method: "POST", body: { answer, note: note.value || undefined } });
          } catch (e) {
            if (!(e instanceof Unauthorized)) showError("#perf-error", e.message);
            btn.disabled = false;
          }
        });
        buttons.append(btn);
      }
      card.append(note, buttons);
      root.append(card);
    }
  }
}

async function sendNote(ev) {
  ev.preventDefault();
  if (!current) return;
  const text = $("#note").value.trim();
  if (!text) return;
  try {
    await api("/performances/" + current.id + "/notes", { method: "POST", body: { text } });
    $("#note").value = "";
    showError("#perf-error", "");
  } catch (e) {
    if (!(e instanceof Unauthorized)) showError("#perf-error", e.message);
  }
}

async function stopPerformance() {
  if (!current) return;
  try {
    await api("/performances/" + current.id + "/stop", { method: "POST", body: {} });
  } catch (e) {
    if (!(e instanceof Unauthorized)) showError("#perf-error", e.message);
  }
}

// ---- ledger ----------------------------------------------------------------------------------

async function renderLedger() {
  const data = await api("/ledger");
  const root = $("#collections");
  root.textContent = "";
  for (const c of data.collections) {
    const card = el("div", "collection card");
    card.dataset.collection = c.name;
    const head = el("div", "collection-head");
    const state = c.settled ? "settled v" + c.settled : c.state;
    head.append(el("h3", null, c.name), el("span", "badge " + String(c.state).replace(/\W/g, ""), state));
    head.append(el("span", "muted", c.records + " records · " + c.rejects + " rejects · " + c.writes_since_change + " writes since the last change"));
    card.append(head, el("pre", "tree", c.tree));
    if (!c.settled) {
      const btn = el("button", null, "Settle");
      btn.addEventListener("click", async () => {
        btn.disabled = true;
        try { await api("/ledger/" + encodeURIComponent(c.name) + "/settle", { method: "POST", body: {} }); await renderLedger(); }
        catch (e) { if (!(e instanceof Unauthorized)) { card.append(el("p", "error", e.message)); btn.disabled = false; } }
      });
      card.append(btn);
    }
    root.append(card);
  }
  $("#ledger-empty").hidden = data.collections.length > 0;
  setConn("connected");
}

// ---- routines --------------------------------------------------------------------------------

async function renderRoutines() {
  const data = await api("/routines");
  const body = $("#routines tbody");
  body.textContent = "";
  for (const r of data.routines) {
    const row = el("tr");
    row.dataset.routine = r.name;
    const status = el("span", "badge " + r.status, r.status + " · " + r.stability);
    if (r.retired_because) status.title = r.retired_because;
    const cells = [el("td", null, r.name), el("td"), el("td", "intent", r.intent),
      el("td", null, String(r.uses)), el("td", null, String(r.fallbacks)), el("td", "muted", r.last_success || "never")];
    cells[1].append(status);
    row.append(...cells);
    body.append(row);
  }
  $("#routines-empty").hidden = data.routines.length > 0;
  setConn("connected");
}

// ---- start -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromHash();
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    localStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
    stage = null;
    route();
  });
  $("#start-form").addEventListener("submit", startPerformance);
  $("#note-form").addEventListener("submit", sendNote);
  $("#stop").addEventListener("click", stopPerformance);
  window.addEventListener("hashchange", route);
  route();
});
