// What the page knows: one bounded picture of the cell, filled by main.js's loaders and the
// event stream, read by the views. Nothing here touches the network or the document.
import { ms } from "./format.js";

export const MAX_LOG = 500;   // events kept in memory for the log

export const state = {
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

/** Keep a live event for the log (newest first); false when it was known already. */
export function addLog(event) {
  if (!event || !event.id || state.logIds.has(event.id)) return false;
  state.log.unshift(event);
  state.logIds.add(event.id);
  trimLog();
  return true;
}

/** Merge events read from the history into the log; true when any was new. */
export function mergeLog(events) {
  let added = false;
  for (const event of events) {
    if (event && event.id && !state.logIds.has(event.id)) {
      state.log.push(event);
      state.logIds.add(event.id);
      added = true;
    }
  }
  if (!added) return false;
  state.log.sort((a, b) => (ms(b.created_at) || 0) - (ms(a.created_at) || 0));
  trimLog();
  return true;
}

function trimLog() {
  while (state.log.length > MAX_LOG) state.logIds.delete(state.log.pop().id);
}

/** An operation by id, from the queue or the history (null when unknown). */
export function findOperation(id) {
  if (!id) return null;
  for (const status of state.operations) if (status.operation.id === id) return status.operation;
  const ops = (state.history && state.history.operations) || [];
  return ops.find((op) => op.id === id) || null;
}

/** The status entry of the current operation, or null. */
export function currentStatus() {
  return state.operations.find((s) => s.is_current_operation) || null;
}

/** Seconds the current operation has run: the server's elapsed_seconds carried on locally. */
export function elapsedOf(status) {
  if (!status) return null;
  if (typeof status.elapsed_seconds === "number") {
    const running = status.operation.state === "RUNNING";
    return status.elapsed_seconds + (running ? (Date.now() - state.fetchedAt) / 1000 : 0);
  }
  const start = ms(status.operation.start_time);
  return start === null ? null : (Date.now() - start) / 1000;
}

/** An operation_progress event applied to the operation it names. */
export function applyProgress(event) {
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
}
