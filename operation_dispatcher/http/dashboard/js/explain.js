// Why an operation waits, in words. The server's explain() gives one sentence per blocker
// ("details[].text"); for a server without it, the blocker names are put into words here.
import { brief, shortId } from "./format.js";

function fallback(blocker, op, signals) {
  const [kind, ...rest] = blocker.split(":");
  const name = rest.join(":");
  switch (kind) {
    case "release_date": return `waiting for its release date ${op && op.release_date ? op.release_date : ""}`.trim();
    case "release_condition": {
      const wanted = op && op.release_conditions ? op.release_conditions[name] : undefined;
      const signal = signals.get(name);
      const now = signal === undefined ? "not set" : `now ${brief(signal.value, 40)}${signal.stale ? " (stale)" : ""}`;
      return wanted === undefined ? `waiting for signal ${name} (${now})`
        : `waiting for ${name} = ${brief(wanted, 40)}, ${now}`;
    }
    case "dependency": return `waiting for operation ${shortId(name)} to finish`;
    case "cooldown": return "cooling down before its next attempt";
    case "awaiting_approval": return "waiting for an approval (see pending requests)";
    case "executor_offline": return `the machine's executor ${name} is offline`;
    case "dispatcher_paused": return "the dispatcher is paused";
    case "dispatcher_not_running": return "the dispatcher is not running";
    case "resource_busy": return "another operation is running";
    default: return blocker;
  }
}

/** The sentences of one explain answer (empty: nothing blocks it). */
export function reasons(explained, op, signals) {
  if (!explained) return [];
  const blocked = Array.isArray(explained.blocked_by) ? explained.blocked_by : [];
  const details = Array.isArray(explained.details) ? explained.details : [];
  return blocked.map((blocker, index) => {
    const detail = details[index];
    return detail && typeof detail.text === "string" && detail.text
      ? detail.text : fallback(String(blocker), op, signals);
  });
}
