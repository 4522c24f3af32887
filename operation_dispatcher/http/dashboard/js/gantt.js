// The Gantt: recent history (one bar per started or finished operation, coloured by outcome,
// paused spans marked, due dates marked, the dispatcher's running/paused row), continued to
// the right by the forecast (dashed bars; "waiting on X" where the start is unknown).
import { svg } from "./dom.js";
import { clock, label, ms } from "./format.js";

const ROW = 18;
const GAP = 4;
const LEFT = 150;
const RIGHT = 12;
const TOP = 22;
export const MAX_HISTORY_ROWS = 40;
export const MAX_FORECAST_ROWS = 40;

const OUTCOME_CLASS = { SUCCESS: "success", FAILURE: "failure", CANCELLED: "cancelled" };

/** The dispatcher's running and paused spans from its own events (oldest first). */
function dispatcherSpans(events, now) {
  const spans = [];
  let open = null; // {start, kind}
  const close = (t) => {
    if (open && t > open.start) spans.push({ ...open, end: t });
    open = null;
  };
  for (const event of events) {
    const t = ms(event.created_at);
    switch (event.event_type) {
      case "operation_dispatcher_started": close(t); open = { start: t, kind: "running" }; break;
      case "operation_dispatcher_paused": close(t); open = { start: t, kind: "paused" }; break;
      case "operation_dispatcher_resumed": close(t); open = { start: t, kind: "running" }; break;
      case "operation_dispatcher_stopped": close(t); break;
      default: break;
    }
  }
  close(now);
  return spans;
}

/** Paused spans of each operation from its paused/resumed events. */
function pausedSpans(events, now) {
  const byOp = new Map();
  const open = new Map();
  for (const event of events) {
    const id = event.operation_id;
    if (!id) continue;
    const t = ms(event.created_at);
    if (event.event_type === "operation_paused") open.set(id, t);
    else if (["operation_resumed", "operation_completed", "operation_failed",
      "operation_cancelled"].includes(event.event_type) && open.has(id)) {
      if (!byOp.has(id)) byOp.set(id, []);
      byOp.get(id).push([open.get(id), t]);
      open.delete(id);
    }
  }
  for (const [id, t] of open) {
    if (!byOp.has(id)) byOp.set(id, []);
    byOp.get(id).push([t, now]);
  }
  return byOp;
}

/** The history rows: operations that started or finished, oldest first (the last N). */
export function historyRows(history, now) {
  const events = (history && history.events) || [];
  const paused = pausedSpans(events, now);
  const rows = [];
  for (const op of (history && history.operations) || []) {
    if (op.state === "QUEUED") continue; // not started yet: the forecast shows it
    const start = ms(op.start_time) ?? ms(op.created_at);
    let end = ms(op.finish_time);
    if (end === null) {
      end = op.state === "COMPLETED"
        ? start + 1000 * (op.planned_duration || 1) : now;
    }
    end = Math.max(end, start + 1000);
    const kind = op.state === "COMPLETED" ? (OUTCOME_CLASS[op.outcome] || "failure") : "running";
    rows.push({ op, start, end, kind, paused: paused.get(op.id) || [], due: ms(op.due_date) });
  }
  rows.sort((a, b) => a.start - b.start);
  return rows.slice(-MAX_HISTORY_ROWS);
}

/** The forecast rows in dispatch order (the first N). */
export function forecastRows(forecast, operationsById) {
  if (!forecast || !Array.isArray(forecast.operations)) return [];
  return forecast.operations.slice(0, MAX_FORECAST_ROWS).map((item) => ({
    item,
    op: operationsById.get(item.operation_id) || { id: item.operation_id, payload: {} },
    start: ms(item.expected_start),
    end: ms(item.expected_end),
    due: ms(item.due_date),
  }));
}

/** Draw the whole chart into ``container`` (replacing what was there). */
export function drawGantt(container, { history, forecast, operationsById, now, describe }) {
  const hist = historyRows(history, now);
  // the running operation's forecast continues its own row (the rest it is expected to take)
  const running = new Map(hist.filter((row) => row.kind === "running").map((row) => [row.op.id, row]));
  const fore = [];
  for (const row of forecastRows(forecast, operationsById)) {
    const own = running.get(row.item.operation_id);
    if (own) own.rest = row;
    else fore.push(row);
  }
  const spans = dispatcherSpans((history && history.events) || [], now);
  let t0 = now - 60 * 1000;
  let t1 = now + 30 * 1000;
  for (const row of hist) t0 = Math.min(t0, row.start);
  for (const span of spans) t0 = Math.min(t0, span.start);
  for (const row of [...fore, ...hist.map((h) => h.rest).filter(Boolean)]) {
    if (row.end !== null) t1 = Math.max(t1, row.end);
  }
  for (const row of [...hist, ...fore]) {
    if (row.due !== null && row.due > t0 && row.due < t1 + 3600e3) t1 = Math.max(t1, row.due);
  }
  t1 = Math.max(t1, now + (now - t0) * 0.15) + (t1 - t0) * 0.03; // room for "waiting on"
  const width = Math.max(container.clientWidth || 800, 560);
  const rows = 1 + hist.length + fore.length;
  const height = TOP + rows * (ROW + GAP) + 8;
  const x = (t) => LEFT + ((t - t0) / (t1 - t0)) * (width - LEFT - RIGHT);
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": "Gantt of recent operations and the forecast",
  });
  // time axis
  for (let i = 0; i <= 4; i += 1) {
    const t = t0 + ((t1 - t0) * i) / 4;
    chart.append(
      svg("line", { class: "axis", x1: x(t), x2: x(t), y1: TOP - 4, y2: height }),
      svg("text", { class: "axis-label", x: x(t), y: 12, "text-anchor": "middle" }, clock(t)),
    );
  }
  let y = TOP;
  const rowLabel = (text) => chart.append(
    svg("text", { x: 4, y: y + ROW - 5 }, text.length > 22 ? `${text.slice(0, 21)}…` : text),
  );
  // the dispatcher's row
  rowLabel("dispatcher");
  for (const span of spans) {
    chart.append(svg("rect", {
      class: `bar dispatcher-${span.kind}`, "data-kind": "dispatcher", x: x(span.start), y,
      width: Math.max(1, x(span.end) - x(span.start)), height: ROW,
    }, svg("title", {}, `dispatcher ${span.kind} ${clock(span.start)}–${clock(span.end)}`)));
  }
  y += ROW + GAP;
  for (const row of hist) {
    rowLabel(label(row.op));
    chart.append(svg("rect", {
      class: `bar ${row.kind}`, "data-kind": "history", "data-operation-id": row.op.id,
      "data-outcome": row.op.outcome, x: x(row.start), y,
      width: Math.max(2, x(row.end) - x(row.start)), height: ROW, rx: 2,
    }, svg("title", {}, `${label(row.op)}: ${row.op.state} ${row.op.outcome} `
      + `${clock(row.start)}–${clock(row.end)}`)));
    for (const [a, b] of row.paused) {
      chart.append(svg("rect", {
        class: "bar paused-span", "data-kind": "paused", x: x(a), y: y + 3,
        width: Math.max(2, x(b) - x(a)), height: ROW - 6,
      }, svg("title", {}, `paused ${clock(a)}–${clock(b)}`)));
    }
    if (row.rest && row.rest.end !== null && row.rest.end > now) {
      const late = row.rest.item.misses_due_date === true;
      chart.append(svg("rect", {
        class: `bar forecast${late ? " late" : ""}`, "data-kind": "forecast-rest",
        "data-operation-id": row.op.id, x: x(now), y,
        width: Math.max(2, x(row.rest.end) - x(now)), height: ROW, rx: 2,
      }, svg("title", {}, `${label(row.op)}: expected to end ${clock(row.rest.end)}`
        + (late ? " (misses its due date)" : ""))));
    }
    dueMark(chart, row.due, x, y, t0, t1);
    y += ROW + GAP;
  }
  for (const row of fore) {
    rowLabel(label(row.op));
    if (row.start !== null && row.end !== null) {
      const late = row.item.misses_due_date === true;
      chart.append(svg("rect", {
        class: `bar forecast${late ? " late" : ""}`, "data-kind": "forecast",
        "data-operation-id": row.item.operation_id, x: x(row.start), y,
        width: Math.max(2, x(row.end) - x(row.start)), height: ROW, rx: 2,
      }, svg("title", {}, `${label(row.op)}: expected ${clock(row.start)}–${clock(row.end)}`
        + (late ? " (misses its due date)" : ""))));
    } else {
      const blocker = row.item.blocked_by;
      const why = !blocker ? "start unknown"
        : describe ? describe(blocker, row.op) : `waiting on ${blocker}`;
      chart.append(svg("text", {
        class: "waiting", "data-kind": "waiting", "data-operation-id": row.item.operation_id,
        x: x(now) + 4, y: y + ROW - 5,
      }, why));
    }
    dueMark(chart, row.due, x, y, t0, t1);
    y += ROW + GAP;
  }
  chart.append(svg("line", { class: "now", x1: x(now), x2: x(now), y1: TOP - 4, y2: height }));
  container.replaceChildren(chart);
  return { history: hist.length, forecast: fore.length };
}

function dueMark(chart, due, x, y, t0, t1) {
  if (due === null || due < t0 || due > t1) return;
  chart.append(svg("line", { class: "due", "data-kind": "due", x1: x(due), x2: x(due),
    y1: y - 1, y2: y + ROW + 1 }, svg("title", {}, `due ${clock(due)}`)));
}
