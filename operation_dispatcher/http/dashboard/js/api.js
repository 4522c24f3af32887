// Calls to the REST API with the token in the Authorization header (never in a URL), and the
// live event stream read with fetch() + ReadableStream (EventSource cannot send that header).

const TOKEN_KEY = "operation-dispatcher.token";
const STREAM_URL = "/events/stream?include_requests=true&include=requests,signals,bridges";

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function storeToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
  }
}

function headers(extra = {}) {
  const token = storedToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function answer(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export async function get(path) {
  return answer(await fetch(path, { headers: headers(), cache: "no-store" }));
}

export async function post(path, body = {}) {
  return answer(await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  }));
}

/**
 * Follow /events/stream until close() is called: parse the Server-Sent Events, call
 * onEvent({type, id, data}) per event or live frame (request_opened, signal, signals_resync,
 * bridge: these have no id), and onStatus(status, detail) on every change
 * ("live", "reconnecting", "unauthorized"). After a drop (a server restart, a network
 * cut) it reconnects with a growing pause (0.5 s doubling up to 5 s); each new "live" is
 * the caller's cue to resynchronise, since events in between are lost.
 */
export function followStream(onEvent, onStatus, { watchdogMs = 45000 } = {}) {
  let closed = false;
  let controller = null;
  let timer = null;
  let failures = 0;

  async function once() {
    controller = new AbortController();
    let watchdog = null;
    const kick = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), watchdogMs); // a half-dead connection
    };
    try {
      // the answered requests (*_requested events) and the state that has no event of its own
      const response = await fetch(STREAM_URL, {
        headers: headers({ Accept: "text/event-stream" }),
        cache: "no-store",
        signal: controller.signal,
      });
      if (response.status === 401 || response.status === 403) {
        onStatus("unauthorized", `the token was refused (HTTP ${response.status})`);
        return false;
      }
      if (!response.ok || !response.body) {
        let detail = `HTTP ${response.status}`;
        try {
          detail = (await response.json()).message || detail;
        } catch { /* not JSON */ }
        onStatus("reconnecting", detail);
        return true;
      }
      failures = 0;
      onStatus("live", "");
      kick();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        kick();
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          dispatch(block);
        }
        if (buffer.length > 4 * 1024 * 1024) buffer = ""; // a broken framing must not pin memory
      }
      onStatus("reconnecting", "the server closed the stream");
    } catch (error) {
      if (!closed) onStatus("reconnecting", error && error.name === "AbortError"
        ? "no heartbeat from the server" : "the server is unreachable");
    } finally {
      clearTimeout(watchdog);
    }
    return true;
  }

  function dispatch(block) {
    let type = "message";
    let id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    if (!data.length) return;
    let parsed = null;
    try {
      parsed = JSON.parse(data.join("\n"));
    } catch {
      return;
    }
    onEvent({ type, id, data: parsed });
  }

  async function loop() {
    while (!closed) {
      const again = await once();
      if (!again || closed) return;
      failures += 1;
      const pause = Math.min(5000, 500 * 2 ** Math.min(failures - 1, 4));
      await new Promise((resolve) => { timer = setTimeout(resolve, pause); });
    }
  }

  loop();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      if (controller) controller.abort();
    },
  };
}
