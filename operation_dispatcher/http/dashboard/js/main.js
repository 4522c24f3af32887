// The dashboard: signs in, follows the event stream, keeps a bounded picture of the machine
// and draws it. Every network read is a reaction to an event (or to a reconnect, which
// resynchronises everything), except for what has no event of its own: signals (and bridges,
// when there are any) are re-read every SLOW_REFRESH_MS, and the open approval requests (a
// request is recorded as an event only once it is answered) every REQUESTS_REFRESH_MS while
// there is work that may need one (something queued or running).
import { ApiError, followStream, get, post, storeToken, storedToken } from "./api.js";
import { el, replace, setText } from "./dom.js";
import { reasons } from "./explain.js";
import { brief, clock, duration, label, ms, shortId } from "./format.js";
import { drawGantt } from "./gantt.js";

const MAX_LOG = 500;          // events kept in memory for the log
const SHOWN_LOG = 200;        // of which at most this many are in the page
const SHOWN_QUEUE = 100;      // queue rows in the page (the count says how many more)
const EXPLAIN_LIMIT = 25;     // queued operations explained (the first ones in dispatch order)
const HISTORY_LIMIT = 1000;   // events read for the Gantt (the API's maximum)
const SLOW_REFRESH_MS = 10000;
const REQUESTS_REFRESH_MS = 2000;
const EVENT_TYPES = [
  "operation_added", "operation_updated", "operation_start_requested", "operation_start_denied",
  "operation_started", "operation_progress", "operation_pause_requested", "operation_pause_denied",
  "operation_paused", "operation_resume_requested", "operation_resume_denied", "operation_resumed",
  "operation_completed", "operation_failed", "operation_cancel_requested",
  "operation_cancel_denied", "operation_cancelled", "operation_dispatcher_started",
  "operation_dispatcher_paused", "operation_dispatcher_resumed", "operation_dispatcher_stopped",
];

const $ = (id) => document.getElementById(id);
const state = {
  whoami: null,
  dispatcher: null,
  operations: [],          // status entries: current first, then queued in dispatch order
  fetchedAt: 0,            // when operations were read (for a running operation's elapsed)
  explains: new Map(),     // operation id -> explain answer
  requests: [],
  signals: new Map(),
  bridges: [],
  history: null,
  forecast: null,          // null: unavailable
  forecastNote: "",
  forecastMissing: false,  // GET /forecast answered 404 (a server without it)
  kpis: null,
  log: [],                 // newest first, at most MAX_LOG
  logIds: new Set(),
  pausedSince: null,
  stream: null,
};
window.dashboardState = state; // for tests and curious operators (read-only use)

// ------------------------------------------------------------------------ scopes and actions

function allowed(scope) {
  return !state.whoami || state.whoami.scopes.includes(scope);
}

function gate(button) {
  const scope = button.dataset.scope;
  if (!scope) return button;
  if (allowed(scope)) {
    if (button.dataset.denied) {
      delete button.dataset.denied;
      button.removeAttribute("title");
    }
    return button;
  }
  button.disabled = true;
  button.dataset.denied = "1";
  const held = state.whoami ? state.whoami.scopes.join(", ") : "";
  button.title = `needs the '${scope}' scope; this token has: ${held}`;
  return button;
}

function action(text, scope, handler, cls = "") {
  const button = el("button", { type: "button", "data-scope": scope, class: cls }, text);
  button.addEventListener("click", async () => {
    if (button.disabled) return;
    button.disabled = true;
    try {
      await handler();
      notice("");
    } catch (error) {
      notice(error instanceof ApiError ? `${text}: ${error.message}` : `${text}: ${error}`);
    } finally {
      button.disabled = false;
      gate(button);
    }
  });
  return gate(button);
}

function notice(text) {
  const node = $("notice");
  setText(node, text);
  node.hidden = !text;
}

// ------------------------------------------------------------------------ refresh scheduling

const MIN_INTERVAL = {
  dispatcher: 150, operations: 300, explains: 1000, requests: 100, signals: 1000,
  bridges: 1000, history: 1500, forecast: 1000, kpis: 10000,
};
const ALL_PARTS = Object.keys(MIN_INTERVAL);
const pending = new Set();
const lastRun = {};
let refreshTimer = null;
let refreshing = false;

function scheduleRefresh(...parts) {
  for (const part of parts.flat()) pending.add(part);
  armRefresh(60);
}

let refreshDueAt = 0;

function armRefresh(delay) {
  // an earlier need wins over a timer set for a later one (a part held back by its interval)
  const due = Date.now() + delay;
  if (refreshTimer !== null && refreshDueAt <= due) return;
  clearTimeout(refreshTimer);
  refreshDueAt = due;
  refreshTimer = setTimeout(runRefresh, delay);
}

async function runRefresh() {
  refreshTimer = null;
  if (refreshing) {
    armRefresh(50);
    return;
  }
  const now = Date.now();
  const due = [];
  let wait = Infinity;
  for (const part of pending) {
    const left = (lastRun[part] || 0) + MIN_INTERVAL[part] - now;
    if (left <= 0) due.push(part);
    else wait = Math.min(wait, left);
  }
  for (const part of due) {
    pending.delete(part);
    lastRun[part] = now;
  }
  refreshing = true;
  try {
    const results = await Promise.allSettled(due.map((part) => LOADERS[part]()));
    const failed = results.find((r) => r.status === "rejected");
    if (failed && failed.reason instanceof ApiError && failed.reason.status === 401) {
      signOut("the token was refused");
      return;
    }
  } finally {
    refreshing = false;
  }
  if (pending.size) armRefresh(Math.max(Number.isFinite(wait) ? wait : 50, 50));
  else if (!document.body.dataset.rendered && ALL_PARTS.every((part) => lastRun[part])) {
    // the first full picture (every part read and drawn): a mark for tests and benchmarks
    requestAnimationFrame(() => {
      document.body.dataset.rendered = "1";
      performance.mark("dashboard-rendered");
    });
  }
}

function resync() {
  for (const part of ALL_PARTS) lastRun[part] = 0;
  // the explanations follow the operations they explain (the operations loader asks for them)
  scheduleRefresh(ALL_PARTS.filter((part) => part !== "explains"));
}

const LOADERS = {
  async dispatcher() {
    state.dispatcher = await get("/dispatcher");
    renderDispatcher();
    renderCurrent();
  },
  async operations() {
    state.operations = await get("/operations");
    state.fetchedAt = Date.now();
    renderQueue();
    renderCurrent();
    renderRequests(); // their rows name the operations
    scheduleRefresh("explains");
  },
  async explains() {
    const queued = state.operations.filter((s) => !s.is_current_operation).slice(0, EXPLAIN_LIMIT);
    const answers = await Promise.allSettled(
      queued.map((s) => get(`/operations/${encodeURIComponent(s.operation.id)}/explain`)),
    );
    const next = new Map();
    answers.forEach((answer, index) => {
      if (answer.status === "fulfilled") next.set(queued[index].operation.id, answer.value);
    });
    state.explains = next;
    renderQueue();
  },
  async requests() {
    state.requests = await get("/requests");
    renderRequests();
  },
  async signals() {
    const list = await get("/signals");
    state.signals = new Map(list.map((s) => [s.name, { ...s, readAt: Date.now() }]));
    renderSignals();
  },
  async bridges() {
    state.bridges = await get("/bridges");
    renderBridges();
  },
  async history() {
    state.history = await get(`/operations/history?limit=${HISTORY_LIMIT}&resolve_operations=true`);
    mergeLog(state.history.events || []);
    const lastPause = [...(state.history.events || [])].reverse().find((e) =>
      e.event_type === "operation_dispatcher_paused");
    if (lastPause) state.pausedSince = lastPause.created_at;
    renderGantt();
    renderDispatcher();
  },
  async forecast() {
    if (state.forecastMissing) return; // a server without the route: asked again on reconnect
    try {
      state.forecast = await get("/forecast");
      state.forecastNote = "";
    } catch (error) {
      if (!(error instanceof ApiError) || error.status === 401) throw error;
      state.forecast = null;
      state.forecastMissing = error.status === 404;
      state.forecastNote = error.status === 404 ? "forecast unavailable"
        : `forecast unavailable: ${error.message}`;
    }
    renderGantt();
  },
  async kpis() {
    const seconds = Number($("kpi-window").value) || 3600;
    const from = new Date(Date.now() - seconds * 1000).toISOString();
    state.kpis = await get(`/reports/kpis?from_time=${encodeURIComponent(from)}`);
    renderKpis();
  },
};

// ------------------------------------------------------------------------------ live events

function onEvent({ type, data }) {
  if (type === "events_dropped") {
    resync();
    return;
  }
  addLog(data);
  if (type === "operation_dispatcher_paused") state.pausedSince = data.created_at;
  if (type === "operation_progress") applyProgress(data);
  if (type.startsWith("operation_dispatcher_")) {
    scheduleRefresh("dispatcher", "operations", "forecast", "history");
  } else if (type.endsWith("_requested") || type.endsWith("_denied")) {
    scheduleRefresh("requests", "operations", "forecast");
  } else if (type === "operation_added" || type === "operation_updated") {
    scheduleRefresh("operations", "forecast", "dispatcher", "requests");
  } else if (type === "operation_progress") {
    scheduleRefresh("operations");
  } else {
    scheduleRefresh("dispatcher", "operations", "requests", "forecast", "history", "kpis");
  }
}

function applyProgress(event) {
  const meta = event.meta_data || {};
  for (const status of state.operations) {
    if (status.operation.id === event.operation_id) {
      status.operation.progress = {
        fraction: typeof meta.fraction === "number" ? meta.fraction : null,
        message: typeof meta.message === "string" ? meta.message : null,
        updated_at: event.created_at,
      };
    }
  }
  renderCurrent();
}

function onStreamStatus(status, detail) {
  const chip = $("connection");
  chip.dataset.state = status;
  setText(chip, status === "live" ? "live" : status === "reconnecting" ? "reconnecting…" : status);
  chip.title = detail || "";
  if (status === "live") {
    notice("");
    state.forecastMissing = false; // the server may have been upgraded meanwhile
    resync();
  } else if (status === "reconnecting") {
    notice(`Event stream lost (${detail}); reconnecting — the page resynchronises when it is back.`);
  } else if (status === "unauthorized") {
    signOut(detail);
  }
}

// ---------------------------------------------------------------------------------- the log

function addLog(event) {
  if (!event || !event.id || state.logIds.has(event.id)) return;
  state.log.unshift(event);
  state.logIds.add(event.id);
  trimLog();
  renderSoon("log");
}

function mergeLog(events) {
  let added = false;
  for (const event of events) {
    if (event && event.id && !state.logIds.has(event.id)) {
      state.log.push(event);
      state.logIds.add(event.id);
      added = true;
    }
  }
  if (!added) return;
  state.log.sort((a, b) => (ms(b.created_at) || 0) - (ms(a.created_at) || 0));
  trimLog();
  renderSoon("log");
}

function trimLog() {
  while (state.log.length > MAX_LOG) state.logIds.delete(state.log.pop().id);
}

const soon = new Set();
function renderSoon(what) {
  if (soon.has(what)) return;
  soon.add(what);
  requestAnimationFrame(() => {
    soon.delete(what);
    if (what === "log") renderLog();
  });
}

function renderLog() {
  const type = $("event-type-filter").value;
  const opFilter = $("event-op-filter").value.trim().toLowerCase();
  const rows = [];
  for (const event of state.log) {
    if (type && event.event_type !== type) continue;
    if (opFilter && !String(event.operation_id || "").toLowerCase().includes(opFilter)) continue;
    const op = findOperation(event.operation_id);
    const meta = event.meta_data && Object.keys(event.meta_data).length
      ? brief(event.meta_data, 160) : "";
    rows.push(el("li", { "data-type": event.event_type, "data-event-id": event.id },
      el("span", { class: "muted" }, clock(event.created_at)),
      el("span", {}, event.event_type),
      el("span", { class: "mono" },
        event.operation_id ? `${shortId(event.operation_id)} ${op ? label(op) : ""} ` : "",
        meta)));
    if (rows.length >= SHOWN_LOG) break;
  }
  replace($("events"), rows);
}

// ------------------------------------------------------------------------------- rendering

function findOperation(id) {
  if (!id) return null;
  for (const status of state.operations) if (status.operation.id === id) return status.operation;
  const ops = (state.history && state.history.operations) || [];
  return ops.find((op) => op.id === id) || null;
}

function renderDispatcher() {
  const d = state.dispatcher;
  if (!d) return;
  setText($("resource"), d.resource_id);
  const mode = !d.is_running ? "stopped" : d.is_paused ? "paused" : "running";
  const chip = $("dispatcher-state");
  chip.dataset.state = mode;
  setText(chip, `dispatcher: ${mode}`);
  const since = mode === "paused" ? state.pausedSince : mode === "running" ? d.running_since : null;
  const sinceNode = $("dispatcher-since");
  sinceNode.dataset.since = since || "";
  setText(sinceNode, since ? `since ${clock(since)}` : "");
  $("dispatcher-pause").disabled = mode !== "running";
  $("dispatcher-resume").disabled = mode !== "paused";
  gate($("dispatcher-pause"));
  gate($("dispatcher-resume"));
}

function currentStatus() {
  return state.operations.find((s) => s.is_current_operation) || null;
}

function elapsedOf(status) {
  if (!status) return null;
  if (typeof status.elapsed_seconds === "number") {
    const running = status.operation.state === "RUNNING";
    return status.elapsed_seconds + (running ? (Date.now() - state.fetchedAt) / 1000 : 0);
  }
  const start = ms(status.operation.start_time);
  return start === null ? null : (Date.now() - start) / 1000;
}

function renderCurrent() {
  const status = currentStatus();
  const box = $("current");
  if (!status) {
    replace(box, el("p", { class: "muted" }, "nothing is running"));
    return;
  }
  const op = status.operation;
  const planned = op.planned_duration;
  const progress = op.progress;
  const parts = [
    el("div", { class: "row-head" },
      el("span", { class: "title", id: "current-title" }, label(op)),
      el("span", { class: "chip", "data-state": op.state === "PAUSED" ? "paused" : "running" },
        op.state),
      el("span", { class: "mono muted" }, shortId(op.id))),
    el("div", { class: "mono", id: "current-payload" }, brief(op.payload, 200)),
    el("div", {}, "elapsed ", el("span", { id: "current-elapsed" }, duration(elapsedOf(status))),
      planned ? ` of planned ${duration(planned)}` : " (no planned duration)"),
  ];
  if (planned) {
    parts.push(el("progress", { class: "progress", id: "current-time", max: planned,
      value: Math.min(planned, elapsedOf(status) || 0) }));
  }
  if (progress) {
    if (typeof progress.fraction === "number") {
      parts.push(el("div", {}, `progress ${Math.round(progress.fraction * 100)} %`),
        el("progress", { class: "progress", id: "current-progress", max: 1,
          value: progress.fraction }));
    }
    if (progress.message) parts.push(el("div", { id: "current-progress-message" }, progress.message));
  }
  parts.push(el("div", { class: "actions" },
    op.state === "RUNNING"
      ? action("Pause", "operate", () => post(`/operations/${op.id}/pause`))
      : action("Resume", "operate", () => post(`/operations/${op.id}/resume`)),
    action("Cancel", "operate", () => post(`/operations/${op.id}/cancel`,
      { termination_reason: "USER_REQUEST" }), "danger")));
  replace(box, parts);
}

/** Reuse the rows of ``list`` by key, so typed input survives a refresh. */
function keyed(list, items, key, create, update) {
  const old = new Map();
  for (const node of list.children) old.set(node.dataset.key, node);
  const nodes = items.map((item, index) => {
    const k = key(item);
    let node = old.get(k);
    if (!node) {
      node = create(item);
      node.dataset.key = k;
    }
    update(node, item, index);
    return node;
  });
  nodes.forEach((node, index) => {
    if (list.children[index] !== node) list.insertBefore(node, list.children[index] || null);
  });
  while (list.children.length > nodes.length) list.lastChild.remove();
}

function renderQueue() {
  const queued = state.operations.filter((s) => !s.is_current_operation);
  setText($("queue-count"), `(${queued.length})`);
  keyed($("queue"), queued.slice(0, SHOWN_QUEUE), (s) => s.operation.id, (status) => {
    const op = status.operation;
    const priority = el("input", { type: "number", step: 1, value: op.priority,
      "aria-label": "priority" });
    const node = el("li", { "data-operation-id": op.id },
      el("div", { class: "row-head" },
        el("span", { class: "pos muted" }), el("span", { class: "title" }, label(op)),
        el("span", { class: "meta muted" })),
      el("ul", { class: "why" }),
      el("div", { class: "actions" }, priority,
        action("Set priority", "submit", () => {
          const value = Number(priority.value);
          if (!Number.isSafeInteger(value)) throw new Error("the priority must be a whole number");
          return post(`/operations/${op.id}/update`, { priority: value });
        }),
        action("Cancel", "operate", () => post(`/operations/${op.id}/cancel`,
          { termination_reason: "USER_REQUEST" }), "danger")));
    return node;
  }, (node, status, index) => {
    const op = status.operation;
    setText(node.querySelector(".pos"), `#${index + 1}`);
    const meta = [`priority ${op.priority}`, op.state];
    if (op.job_id) meta.push(`job ${op.job_id}`);
    if (op.planned_duration) meta.push(`planned ${duration(op.planned_duration)}`);
    if (op.due_date) meta.push(`due ${clock(op.due_date)}`);
    setText(node.querySelector(".meta"), meta.join(" · "));
    const why = reasons(state.explains.get(op.id), op, state.signals);
    const list = node.querySelector(".why");
    const text = why.join("\n");
    if (list.dataset.text !== text) {
      list.dataset.text = text;
      replace(list, why.map((w) => el("li", { class: "reason" }, w)));
    }
  });
  const more = queued.length - SHOWN_QUEUE;
  $("queue-more").hidden = more <= 0;
  setText($("queue-more"), more > 0 ? `… and ${more} more (the API lists them all)` : "");
}

function renderRequests() {
  setText($("requests-count"), `(${state.requests.length})`);
  keyed($("requests"), state.requests, (r) => r.request_id, (request) => {
    const reasoning = el("input", { type: "text", placeholder: "reasoning (optional)",
      "aria-label": "reasoning", maxlength: 1000 });
    const decide = (verdict) => () => post(
      `/requests/${encodeURIComponent(request.request_id)}/${verdict}`,
      { reasoning: reasoning.value.trim() || null },
    ).finally(() => scheduleRefresh("requests"));
    return el("li", { "data-request-id": request.request_id },
      el("div", { class: "row-head" },
        el("span", { class: "title" }, request.event_type.replace(/^operation_|_requested$/g, "")),
        el("span", { class: "target" }),
        el("span", { class: "muted" }, "waiting ",
          el("span", { class: "waited", "data-since": request.created_at }))),
      el("div", { class: "actions" }, reasoning,
        action("Approve", "operate", decide("approve"), "ok"),
        action("Deny", "operate", decide("deny"), "danger")));
  }, (node, request) => {
    const op = findOperation(request.operation_id);
    setText(node.querySelector(".target"),
      `${op ? label(op) : "operation"} ${shortId(request.operation_id)}`);
    setText(node.querySelector(".waited"), duration((Date.now() - ms(request.created_at)) / 1000));
  });
}

/** A signal's age when it was last read (a bridge re-confirms its signals without an event,
 * so an age ticking on between two reads would be wrong). */
function signalAge(signal) {
  const updated = ms(signal.updated_at);
  return updated === null ? null : Math.max(0, (signal.readAt - updated) / 1000);
}

function renderSignals() {
  const rows = [...state.signals.values()].sort((a, b) => a.name.localeCompare(b.name)).map((s) => {
    const age = signalAge(s);
    return el("tr", { "data-signal": s.name, class: s.stale ? "stale" : "" },
      el("td", { class: "mono" }, s.name), el("td", { class: "mono" }, brief(s.value, 60)),
      el("td", { class: "age" }, duration(age)),
      el("td", {}, s.stale ? "stale" : ""));
  });
  const read = $("signals-read");
  read.dataset.since = new Date().toISOString();
  setText(read, "0 s");
  replace($("signals"), rows.length ? rows : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no signals"))]);
}

function renderBridges() {
  const rows = state.bridges.map((b) => el("li", { "data-bridge": b.name },
    el("div", { class: "row-head" },
      el("span", { class: "title" }, b.name),
      el("span", { class: "chip", "data-state": b.online ? "live" : "offline" },
        b.online ? "online" : "offline"),
      el("span", { class: "muted" }, `${b.kind} ${b.endpoint || ""}`)),
    b.last_error ? el("div", { class: "stale mono" }, `last error: ${brief(b.last_error, 200)}`) : null,
    el("div", { class: "muted mono" }, brief(b.counters || {}, 120))));
  replace($("bridges"), rows.length ? rows : [el("li", { class: "muted" }, "no bridges")]);
}

function renderGantt() {
  const byId = new Map();
  for (const op of (state.history && state.history.operations) || []) byId.set(op.id, op);
  for (const status of state.operations) byId.set(status.operation.id, status.operation);
  drawGantt($("gantt"), {
    history: state.history, forecast: state.forecast, operationsById: byId, now: Date.now(),
    describe: (blocker, op) => `${reasons({ blocked_by: [blocker] }, op, state.signals)[0]}`,
  });
  setText($("forecast-status"), state.forecastNote);
}

function renderKpis() {
  const k = state.kpis;
  if (!k) return;
  const pct = (v) => (v === null || v === undefined ? "—" : `${v.toFixed(1)} %`);
  const secs = (v) => (v === null || v === undefined ? "—" : duration(v));
  const rows = [
    ["uptime", `${secs(k.dispatcher_uptime_seconds)} (${pct(k.dispatcher_uptime_percentage)})`],
    ["runtime (not paused)", `${secs(k.dispatcher_runtime_seconds)} (${pct(k.dispatcher_runtime_percentage)})`],
    ["operations seen", k.operation_count],
    ["finished", k.completed_operation_count],
    ["succeeded", k.successful_operation_count],
    ["events analysed", `${k.events}${k.truncated ? " (most recent only)" : ""}`],
  ];
  replace($("kpis"), rows.map(([name, value]) => el("tr", { "data-kpi": name },
    el("th", {}, name), el("td", {}, String(value)))));
}

/** Once a second: the clocks that move by themselves (no network). */
function tick() {
  const now = Date.now();
  for (const node of document.querySelectorAll("[data-since]")) {
    const since = ms(node.dataset.since);
    if (since === null) continue;
    if (node.id === "dispatcher-since") {
      setText(node, `since ${clock(since)} (${duration((now - since) / 1000)})`);
    } else {
      setText(node, duration((now - since) / 1000));
    }
  }
  const status = currentStatus();
  const elapsed = $("current-elapsed");
  if (status && elapsed) {
    setText(elapsed, duration(elapsedOf(status)));
    const bar = $("current-time");
    if (bar) bar.value = Math.min(Number(bar.max), elapsedOf(status) || 0);
  }
}

// ----------------------------------------------------------------------------- signing in

function showLogin(reason) {
  $("board").hidden = true;
  $("login").hidden = false;
  setText($("login-reason"), reason || "This server needs a token.");
  $("sign-out").hidden = true;
  $("token-input").focus();
}

function signOut(reason) {
  if (state.stream) state.stream.close();
  state.stream = null;
  storeToken("");
  state.whoami = null;
  showLogin(reason);
}

let retryTimer = null;

async function signIn() {
  clearTimeout(retryTimer);
  try {
    state.whoami = await get("/auth/whoami");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      storeToken(""); // a refused token is not kept
      showLogin("The token was refused: enter another one.");
    } else if (error instanceof ApiError && error.status === 403) {
      storeToken("");
      showLogin(`This token may not read the cell (${error.message}): enter another one.`);
    } else {
      notice(`The server does not answer (${error.message}); trying again.`);
      retryTimer = setTimeout(signIn, 2000);
    }
    return;
  }
  if (state.whoami.token_required && !storedToken()) {
    showLogin("This server needs a token.");
    return;
  }
  $("login").hidden = true;
  $("board").hidden = false;
  $("sign-out").hidden = !state.whoami.token_required;
  setText($("identity"), state.whoami.token_required
    ? `${state.whoami.name || "token"}: ${state.whoami.scopes.join(", ")}` : "");
  for (const button of document.querySelectorAll("button[data-scope]")) gate(button);
  if (state.stream) state.stream.close();
  state.stream = followStream(onEvent, onStreamStatus);
}

function boot() {
  const typeFilter = $("event-type-filter");
  for (const type of EVENT_TYPES) typeFilter.append(el("option", { value: type }, type));
  typeFilter.addEventListener("change", () => renderLog());
  $("event-op-filter").addEventListener("input", () => renderLog());
  $("kpi-window").addEventListener("change", () => {
    lastRun.kpis = 0;
    scheduleRefresh("kpis");
  });
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    storeToken($("token-input").value.trim());
    $("token-input").value = "";
    signIn();
  });
  $("sign-out").addEventListener("click", () => signOut("Signed out."));
  const pause = $("dispatcher-pause");
  const resume = $("dispatcher-resume");
  for (const [button, path] of [[pause, "/dispatcher/pause"], [resume, "/dispatcher/resume"]]) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await post(path);
        notice("");
      } catch (error) {
        notice(`${button.textContent}: ${error.message}`);
      }
      scheduleRefresh("dispatcher");
    });
  }
  setInterval(tick, 1000);
  setInterval(() => {
    // bridges are configured at start-up: none now means none until a restart (which resyncs)
    if (!document.hidden && state.stream) {
      scheduleRefresh(state.bridges.length ? ["signals", "bridges"] : ["signals"]);
    }
  }, SLOW_REFRESH_MS);
  setInterval(() => {
    const working = state.operations.length > 0 || state.requests.length > 0;
    if (!document.hidden && state.stream && working) scheduleRefresh("requests");
  }, REQUESTS_REFRESH_MS);
  setInterval(() => {
    if (!document.hidden && state.history && currentStatus()) renderGantt(); // the "now" line
  }, 5000);
  signIn();
}

boot();
