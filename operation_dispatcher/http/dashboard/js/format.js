// Formatting of times, durations and values for people.

/** Milliseconds since the epoch of an ISO-8601 string (null for null). */
export function ms(iso) {
  if (!iso) return null;
  const value = Date.parse(iso);
  return Number.isNaN(value) ? null : value;
}

/** "1 h 02 min", "3 min 05 s", "12 s" */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "?";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  const h = Math.floor(s / 3600);
  return `${h} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/** Local wall-clock time "08:15:02" of an ISO string or epoch ms (with the date when it is
 * not today). */
export function clock(value) {
  const t = typeof value === "number" ? value : ms(value);
  if (t === null) return "?";
  const date = new Date(t);
  const time = date.toLocaleTimeString([], { hour12: false });
  if (date.toDateString() === new Date().toDateString()) return time;
  const day = `${date.getFullYear()}-${String(date.getMonth() + 1).padStart(2, "0")}-`
    + String(date.getDate()).padStart(2, "0");
  return `${day} ${time}`;
}

/** A short, single-line rendering of any JSON value (bounded). */
export function brief(value, limit = 80) {
  let text;
  try {
    text = typeof value === "string" ? value : JSON.stringify(value);
  } catch {
    text = String(value);
  }
  if (text === undefined) text = String(value);
  return text.length > limit ? `${text.slice(0, limit - 1)}…` : text;
}

/** What a person calls an operation: payload name or task, else a short id. */
export function label(op) {
  if (!op) return "?";
  const payload = op.payload || {};
  const name = typeof payload.name === "string" ? payload.name
    : typeof payload.task === "string" ? payload.task : null;
  return name ? brief(name, 48) : `op ${String(op.id).slice(0, 8)}`;
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "";
}
