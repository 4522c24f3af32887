// The dashboard: signs in, follows the event stream, keeps a bounded picture of the machine
// and draws it. Every network read is a reaction to an event (or to a reconnect, which
// resynchronises everything): nothing is polled. What has no event of its own comes on the
// stream as live frames: request_opened (a request waits for an answer; it closes as its
// *_requested event), signal (coalesced by the server), signals_resync and bridge. The only
// timers left are local: the ages shown tick once a second, the Gantt's "now" line every 5 s.
import { ApiError, followStream, get, post, storeToken, storedToken } from "./api.js";
import { $, gate, notice } from "./controls.js";
import { el, setText } from "./dom.js";
import { addLog, applyProgress, currentStatus, mergeLog, state } from "./store.js";
import {
  renderBridges, renderCurrent, renderDispatcher, renderGantt, renderKpis, renderLog,
  renderQueue, renderRequests, renderSignals, tick,
} from "./views.js";

const EXPLAIN_LIMIT = 25;     // queued operations explained (the first ones in dispatch order)
const HISTORY_LIMIT = 1000;   // events read for the Gantt (the API's maximum)
const MAX_REQUESTS = 500;      // open requests drawn from live frames
const CLOSED_REMEMBERED = 256; // answered request ids kept, so a late request_opened is ignored
const EVENT_TYPES = [
  "operation_added", "operation_updated", "operation_start_requested", "operation_start_denied",
  "operation_started", "operation_progress", "operation_pause_requested", "operation_pause_denied",
  "operation_paused", "operation_resume_requested", "operation_resume_denied", "operation_resumed",
  "operation_completed", "operation_failed", "operation_cancel_requested",
  "operation_cancel_denied", "operation_cancelled", "operation_dispatcher_started",
  "operation_dispatcher_paused", "operation_dispatcher_resumed", "operation_dispatcher_stopped",
];

window.dashboardState = state; // for tests and curious operators (read-only use)

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
    const open = await get("/requests"); // less those closed while it was on its way
    state.requests = open.filter((r) => !closedRequests.has(r.request_id));
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
    if (mergeLog(state.history.events || [])) renderSoon("log");
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

const closedRequests = new Set();

function requestClosed(id) {
  closedRequests.add(id);
  if (closedRequests.size > CLOSED_REMEMBERED) {
    closedRequests.delete(closedRequests.values().next().value);
  }
  const before = state.requests.length;
  state.requests = state.requests.filter((r) => r.request_id !== id);
  if (state.requests.length !== before) renderRequests();
}

/** The live frames (no id, not for the log): state that has no event of its own. */
const FRAMES = {
  request_opened(request) {
    if (closedRequests.has(request.request_id)) return; // answered before this frame came
    if (state.requests.length >= MAX_REQUESTS) return; // the next resync shows the rest
    if (state.requests.some((r) => r.request_id === request.request_id)) return;
    state.requests = [...state.requests, request].sort(
      (a, b) => String(a.created_at).localeCompare(String(b.created_at)));
    renderRequests();
  },
  signal(signal) {
    state.signals.set(signal.name, { ...signal, readAt: Date.now() });
    renderSoon("signals");
    const waits = [...state.explains.values()].some((e) =>
      (e.blocked_by || []).includes(`release_condition:${signal.name}`));
    if (waits) scheduleRefresh("explains"); // the reason's words name the signal's value
  },
  signals_resync() {
    scheduleRefresh("signals");
  },
  bridge(bridge) {
    const others = state.bridges.filter((b) => b.name !== bridge.name);
    state.bridges = [...others, bridge].sort((a, b) => a.name.localeCompare(b.name));
    renderBridges();
  },
};

function onEvent({ type, data }) {
  if (type === "events_dropped") {
    resync();
    return;
  }
  if (Object.hasOwn(FRAMES, type)) {
    FRAMES[type](data);
    return;
  }
  if (type.endsWith("_requested") && data.meta_data && data.meta_data.request_decision) {
    requestClosed(data.id); // recorded once answered, expired or withdrawn: no longer open
  }
  if (addLog(data)) renderSoon("log");
  if (type === "operation_dispatcher_paused") state.pausedSince = data.created_at;
  if (type === "operation_progress") {
    applyProgress(data);
    renderCurrent();
  }
  if (type.startsWith("operation_dispatcher_")) {
    scheduleRefresh("dispatcher", "operations", "forecast", "history");
  } else if (type.endsWith("_requested") || type.endsWith("_denied")) {
    scheduleRefresh("operations", "forecast");
  } else if (type === "operation_added" || type === "operation_updated") {
    scheduleRefresh("operations", "forecast", "dispatcher");
  } else if (type === "operation_progress") {
    scheduleRefresh("operations");
  } else {
    scheduleRefresh("dispatcher", "operations", "forecast", "history", "kpis");
  }
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

// ------------------------------------------------------------------- drawing at the next frame

const soon = new Set();
function renderSoon(what) {
  if (soon.has(what)) return;
  soon.add(what);
  requestAnimationFrame(() => {
    soon.delete(what);
    if (what === "log") renderLog();
    else if (what === "signals") renderSignals();
  });
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
  setInterval(tick, 1000); // local only: the ages shown
  setInterval(() => {
    if (!document.hidden && state.history && currentStatus()) renderGantt(); // the "now" line
  }, 5000);
  signIn();
}

boot();
