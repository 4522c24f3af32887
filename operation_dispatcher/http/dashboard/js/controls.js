// Buttons that act on the cell: disabled, with a tooltip, when the token lacks the scope; a
// failed action is told in the notice line.
import { ApiError } from "./api.js";
import { el, setText } from "./dom.js";
import { state } from "./store.js";

export const $ = (id) => document.getElementById(id);

export function allowed(scope) {
  return !state.whoami || state.whoami.scopes.includes(scope);
}

export function gate(button) {
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

export function action(text, scope, handler, cls = "") {
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

export function notice(text) {
  const node = $("notice");
  setText(node, text);
  node.hidden = !text;
}
