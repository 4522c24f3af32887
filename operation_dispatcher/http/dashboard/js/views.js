// Drawing the picture: one function per panel, each reading the store and writing text only.
import { post } from "./api.js";
import { $, action, gate } from "./controls.js";
import { el, replace, setText } from "./dom.js";
import { reasons } from "./explain.js";
import { brief, clock, duration, label, ms, shortId } from "./format.js";
import { drawGantt } from "./gantt.js";
import { currentStatus, elapsedOf, findOperation, state } from "./store.js";

const SHOWN_LOG = 200;        // log rows in the page (of the MAX_LOG kept)
const SHOWN_QUEUE = 100;      // queue rows in the page (the count says how many more)

export function renderLog() {
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

export function renderDispatcher() {
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

export function renderCurrent() {
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

export function renderQueue() {
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

export function renderRequests() {
  setText($("requests-count"), `(${state.requests.length})`);
  keyed($("requests"), state.requests, (r) => r.request_id, (request) => {
    const reasoning = el("input", { type: "text", placeholder: "reasoning (optional)",
      "aria-label": "reasoning", maxlength: 1000 });
    const decide = (verdict) => () => post(
      `/requests/${encodeURIComponent(request.request_id)}/${verdict}`,
      { reasoning: reasoning.value.trim() || null },
    ); // the answer's *_REQUESTED event (recorded once answered) takes it off the list
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

/** A signal's age when it was last heard of (read, or sent on the stream when it changed): a
 * bridge re-confirms its signals without telling anyone, so an age ticking on would be wrong.
 * Its staleness is the server's: the stream sends the signal again when it goes stale. */
function signalAge(signal) {
  const updated = ms(signal.updated_at);
  return updated === null ? null : Math.max(0, (signal.readAt - updated) / 1000);
}

export function renderSignals() {
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

export function renderBridges() {
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

export function renderGantt() {
  const byId = new Map();
  for (const op of (state.history && state.history.operations) || []) byId.set(op.id, op);
  for (const status of state.operations) byId.set(status.operation.id, status.operation);
  drawGantt($("gantt"), {
    history: state.history, forecast: state.forecast, operationsById: byId, now: Date.now(),
    describe: (blocker, op) => `${reasons({ blocked_by: [blocker] }, op, state.signals)[0]}`,
  });
  setText($("forecast-status"), state.forecastNote);
}

export function renderKpis() {
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
export function tick() {
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
