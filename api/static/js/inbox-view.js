// The inbox's pieces of markup: a notification's row (actions, snooze menu, archive), its
// toast, the counts by priority, and the snooze presets. State lives in inbox.js; every
// control here is a real button, so the keyboard reaches all of it.
import { el, formatAgo } from "./format.js";

export const PRIORITY_LABELS = { low: "Low", normal: "Normal", high: "High", urgent: "Urgent" };
const PRIORITY_ORDER = ["urgent", "high", "normal", "low"];

/** Snooze presets in the person's own time zone (the browser's). */
export function snoozePresets(now = new Date()) {
  const hour = new Date(now.getTime() + 3600 * 1000);
  const tomorrow = new Date(now);
  tomorrow.setDate(now.getDate() + 1);
  tomorrow.setHours(9, 0, 0, 0);
  const monday = new Date(now);
  monday.setDate(now.getDate() + (((8 - now.getDay()) % 7) || 7));
  monday.setHours(9, 0, 0, 0);
  return [
    { label: "1 hour", until: hour },
    { label: "Tomorrow 9:00", until: tomorrow },
    { label: "Next Monday 9:00", until: monday },
  ];
}

/** `YYYY-MM-DDTHH:MM` in local time, for a datetime-local input. */
function localInputValue(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** Action buttons: done ones stay, disabled and marked done, so every tab shows the same. */
export function actionButtons(n, onAct) {
  return (n.actions || []).map((action, index) => {
    const button = el("button", { type: "button", class: "note-act", "data-act": index });
    button.addEventListener("click", () => onAct(n.id, index, button));
    fillActionButton(button, action);
    return button;
  });
}

export function fillActionButton(button, action) {
  const done = Boolean(action.done_at);
  button.textContent = done ? `${action.label} ✓` : action.label;
  button.dataset.done = String(done);
  button.dataset.kind = action.kind;
  // A done api action cannot be done again; a done link can still be opened.
  button.disabled = done && action.kind === "api";
  button.title = done ? `Done ${formatAgo(action.done_at)}` : "";
}

/** A snooze button with its menu: three presets and a chosen time. */
export function snoozeControl(n, onSnooze) {
  const button = el("button", {
    type: "button",
    class: "link-button",
    "data-action": "snooze",
    "aria-haspopup": "true",
    "aria-expanded": "false",
    "aria-label": `Snooze “${n.title}”`,
    text: "Snooze",
  });
  const menu = el("div", { class: "snooze-menu", role: "group", "aria-label": "Snooze until", hidden: true });
  const close = (focus = true) => {
    menu.hidden = true;
    button.setAttribute("aria-expanded", "false");
    if (focus) button.focus();
  };
  const choose = (until) => {
    close(false);
    onSnooze(n.id, until);
  };
  // The times are taken when the menu opens: a row may stay on the page for hours.
  let times = snoozePresets();
  const presets = times.map(({ label }, i) => {
    const item = el("button", { type: "button", class: "snooze-item", text: label });
    item.addEventListener("click", () => choose(times[i].until));
    return item;
  });
  const input = el("input", { type: "datetime-local", class: "snooze-when", step: "1", "aria-label": "Snooze until (date and time)" });
  const pick = el("button", { type: "button", class: "snooze-item", "data-action": "snooze-pick", text: "Snooze until then" });
  pick.addEventListener("click", () => {
    const until = new Date(input.value);
    if (!input.value || Number.isNaN(until.getTime())) {
      input.setCustomValidity("Choose a date and time");
      input.reportValidity();
      return;
    }
    input.setCustomValidity("");
    choose(until);
  });
  menu.append(...presets, el("label", { class: "snooze-custom" }, "Or at ", input), pick);
  button.addEventListener("click", () => {
    const open = menu.hidden;
    menu.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (open) {
      times = snoozePresets();
      input.value = localInputValue(new Date(Date.now() + 3 * 3600 * 1000));
      presets[0].focus();
    }
  });
  menu.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      close();
    }
  });
  return el("span", { class: "snooze" }, button, menu);
}

/** Unread by priority, most pressing first; zero counts are left out. */
export function renderCounts(node, counts) {
  const by = counts?.by_priority || {};
  const parts = PRIORITY_ORDER.filter((p) => by[p] > 0).map((p) =>
    el("span", { class: "count-chip", "data-priority": p, text: `${by[p]} ${PRIORITY_LABELS[p].toLowerCase()}` }),
  );
  node.replaceChildren(...(parts.length ? [el("span", { class: "muted", text: "Unread: " }), ...parts] : []));
  node.hidden = parts.length === 0;
}

export function buildRow(n, handlers) {
  const title = el("p", { class: "note-title" });
  const message = el("p", { class: "note-message" });
  const time = el("time", { class: "note-time" });
  const acts = el("div", { class: "note-acts" });
  const button = (action, text) => {
    const b = el("button", { type: "button", class: "link-button", "data-action": action, text });
    b.addEventListener("click", () => handlers[action](n.id));
    return b;
  };
  return el(
    "li",
    { class: "note", "data-id": n.id },
    el("div", { class: "note-main" }, title, message, time, acts),
    el(
      "div",
      { class: "note-actions" },
      button("read", "Mark read"),
      snoozeControl(n, handlers.snooze),
      button("archive", "Archive"),
      button("unarchive", "Unarchive"),
      button("dismiss", "Dismiss"),
    ),
  );
}

export function fillRow(node, n, onAct) {
  node.dataset.priority = n.priority;
  node.classList.toggle("unread", !n.is_read);
  node.classList.toggle("unseen", !n.seen_at);
  node.classList.toggle("archived", Boolean(n.archived_at));
  const [main, controls] = node.children;
  const [title, message, time, acts] = main.children;
  const label = PRIORITY_LABELS[n.priority] || n.priority;
  title.replaceChildren(
    el("span", { class: "priority", "data-priority": n.priority, text: label }),
    " ",
    n.title,
    n.is_read ? "" : el("span", { class: "visually-hidden", text: " (unread)" }),
  );
  message.textContent = n.message;
  time.dateTime = n.created_at;
  time.textContent = formatAgo(n.created_at);
  const actions = n.actions || [];
  const existing = [...acts.children];
  if (existing.length !== actions.length) acts.replaceChildren(...actionButtons(n, onAct));
  else existing.forEach((b, i) => fillActionButton(b, actions[i]));
  acts.hidden = actions.length === 0;
  const q = (action) => controls.querySelector(`[data-action=${action}]`);
  q("read").hidden = n.is_read;
  q("read").setAttribute("aria-label", `Mark “${n.title}” read`);
  q("archive").hidden = Boolean(n.archived_at);
  q("archive").setAttribute("aria-label", `Archive “${n.title}”`);
  q("unarchive").hidden = !n.archived_at;
  q("unarchive").setAttribute("aria-label", `Unarchive “${n.title}”`);
  q("dismiss").setAttribute("aria-label", `Dismiss “${n.title}”`);
}

export function buildToast(n, { onOpen, onAct }) {
  const close = el("button", { type: "button", class: "toast-close", "aria-label": "Close", text: "×" });
  const open = el("button", { type: "button", class: "link-button", text: "Open notifications" });
  const toast = el(
    "div",
    { class: `toast toast--${n.priority}`, "data-id": n.id },
    el("p", { class: "toast-title" }, el("span", { class: "priority", "data-priority": n.priority, text: PRIORITY_LABELS[n.priority] }), " ", n.title),
    el("p", { class: "toast-message", text: n.message }),
    el("div", { class: "toast-actions" }, ...actionButtons(n, onAct), open),
    close,
  );
  close.addEventListener("click", () => toast.remove());
  open.addEventListener("click", () => {
    toast.remove();
    onOpen();
  });
  return toast;
}

/** Opens an action's link: `/#file=ID` chooses that file on this page, an API address is
 * fetched with the token and saved (a report download), anything else opens in a new tab. */
export async function openLink(api, url, { onOpenFile, onError }) {
  const file = /^\/?#file=(\d+)$/.exec(url);
  if (file && onOpenFile) {
    onOpenFile(Number(file[1]));
    return;
  }
  if (url.startsWith("/api/v1/")) {
    try {
      const response = await api.raw(url.slice("/api/v1".length));
      const blob = await response.blob();
      const header = response.headers.get("Content-Disposition") || "";
      const name = /filename="?([^";]+)"?/i.exec(header)?.[1] || "download";
      const a = el("a", { href: URL.createObjectURL(blob), download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (error) {
      if (error.status !== 401) onError(`The download failed: ${error.message}`);
    }
    return;
  }
  window.open(url, "_blank", "noopener");
}
