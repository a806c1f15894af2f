// The notification bell: unread badge (99+), the list with mark-read, mark-all-read and dismiss,
// and toasts for high and urgent notifications. Counts come from the events' `unread_count`,
// so every tab of the user follows the others.
import { config } from "./config.js";
import { el, formatAgo } from "./format.js";
import { schedule } from "./frame.js";

const PAGE_SIZE = 50;
const MAX_TOASTS = 4;
const PRIORITY_LABELS = { low: "Low", normal: "Normal", high: "High", urgent: "Urgent" };

export function badgeText(count) {
  return count > 99 ? "99+" : String(count);
}

export class Inbox {
  constructor({ api, bell, badge, panel, list, empty, more, markAll, toasts, alerts, onError }) {
    Object.assign(this, { api, bell, badge, panel, list, empty, more, markAll, toasts, alerts, onError });
    this.items = new Map();
    this.nodes = new Map();
    this.unread = 0;
    this.total = 0;
    this.pages = 1;
    this.buffer = null;
    this.toasted = new Set();
    this.baseTitle = document.title;
    this.render = this.render.bind(this);

    bell.addEventListener("click", () => this.setOpen(panel.hidden));
    markAll.addEventListener("click", () => this.markAllRead());
    more.addEventListener("click", () => this.loadMore());
    panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        this.setOpen(false);
        bell.focus();
      }
    });
    // "5 minutes ago" grows older while the list is open.
    setInterval(() => {
      if (!panel.hidden) this.#renderList();
    }, 30000);
    document.addEventListener("click", (event) => {
      if (!panel.hidden && !panel.contains(event.target) && !bell.contains(event.target)) this.setOpen(false);
    });
  }

  setOpen(open) {
    this.panel.hidden = !open;
    this.bell.setAttribute("aria-expanded", String(open));
    if (open) {
      this.#renderList();
      this.panel.querySelector("button:not([hidden]):not(:disabled)")?.focus();
    }
  }

  /** The list from the API; events arriving meanwhile wait and are applied after it. Asked
   * again while loading (a `reset` meanwhile), it loads once more: the first read may predate
   * the reset's position. */
  async load() {
    if (this.buffer) {
      this.again = true;
      return;
    }
    this.buffer = [];
    try {
      do {
        this.again = false;
        const body = await this.api.get("/notifications", { page: 1, limit: PAGE_SIZE });
        this.items = new Map(body.notifications.map((n) => [n.id, n]));
        this.unread = body.unread_count;
        this.total = body.total;
        this.pages = 1;
      } while (this.again);
    } catch (error) {
      if (error.status !== 401) this.onError(`Notifications could not be loaded: ${error.message}`);
    } finally {
      const waiting = this.buffer;
      this.buffer = null;
      for (const envelope of waiting) this.#apply(envelope);
      schedule(this.render);
    }
  }

  async loadMore() {
    try {
      const body = await this.api.get("/notifications", { page: this.pages + 1, limit: PAGE_SIZE });
      this.pages += 1;
      for (const n of body.notifications) if (!this.items.has(n.id)) this.items.set(n.id, n);
      this.total = body.total;
      this.unread = body.unread_count;
      schedule(this.render);
    } catch (error) {
      if (error.status !== 401) this.onError(`More notifications could not be loaded: ${error.message}`);
    }
  }

  handle(envelope) {
    if (this.buffer) this.buffer.push(envelope);
    else this.#apply(envelope);
  }

  #apply({ type, data }) {
    if (!data) return;
    switch (type) {
      case "notification": {
        const { unread_count: unread, ...n } = data;
        const known = this.items.has(n.id);
        if (!n.is_dismissed) this.items.set(n.id, n);
        if (!known && !n.is_dismissed) this.total += 1;
        this.unread = unread;
        if ((n.priority === "high" || n.priority === "urgent") && !n.is_read) this.#toast(n);
        break;
      }
      case "notification_read": {
        const n = this.items.get(data.id);
        if (n) Object.assign(n, { is_read: true, read_at: data.read_at });
        this.unread = data.unread_count;
        break;
      }
      case "notifications_read_all": {
        const now = new Date().toISOString();
        for (const n of this.items.values()) if (!n.is_read) Object.assign(n, { is_read: true, read_at: now });
        this.unread = data.unread_count;
        break;
      }
      case "notification_dismissed": {
        if (this.items.delete(data.id)) this.total = Math.max(0, this.total - 1);
        this.unread = data.unread_count;
        break;
      }
      default:
        return;
    }
    schedule(this.render);
  }

  async markRead(id) {
    try {
      const n = await this.api.post(`/notifications/${encodeURIComponent(id)}/read`);
      const { unread_count: unread, ...stored } = n;
      this.items.set(id, stored);
      this.unread = unread;
      this.render();
      this.nodes.get(id)?.querySelector("[data-action=dismiss]")?.focus();
    } catch (error) {
      if (error.status === 404) this.#forget(id);
      else if (error.status !== 401) this.onError(`Could not mark it read: ${error.message}`);
    }
  }

  async dismiss(id) {
    const next = this.#neighbour(id);
    try {
      const n = await this.api.post(`/notifications/${encodeURIComponent(id)}/dismiss`);
      this.unread = n.unread_count;
      this.#forget(id);
      (next?.querySelector("button") || this.markAll).focus();
    } catch (error) {
      if (error.status === 404) this.#forget(id);
      else if (error.status !== 401) this.onError(`Could not dismiss it: ${error.message}`);
    }
  }

  async markAllRead() {
    try {
      const body = await this.api.post("/notifications/mark-all-read");
      this.#apply({ type: "notifications_read_all", data: { unread_count: body.unread_count } });
    } catch (error) {
      if (error.status !== 401) this.onError(`Could not mark all read: ${error.message}`);
    }
  }

  #forget(id) {
    if (this.items.delete(id)) this.total = Math.max(0, this.total - 1);
    this.render();
  }

  #neighbour(id) {
    const node = this.nodes.get(id);
    return node?.nextElementSibling || node?.previousElementSibling || null;
  }

  render() {
    const count = Math.max(0, this.unread);
    const text = badgeText(count);
    this.badge.textContent = text;
    this.badge.hidden = count === 0;
    this.bell.dataset.count = String(count);
    this.bell.setAttribute("aria-label", `Notifications, ${count === 0 ? "none" : text} unread`);
    document.title = count ? `(${text}) ${this.baseTitle}` : this.baseTitle;
    if (!this.panel.hidden) this.#renderList();
  }

  #sorted() {
    return [...this.items.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
  }

  /** Keyed: rows are updated in place, so a focused button keeps its focus. */
  #renderList() {
    const sorted = this.#sorted();
    const keep = new Set(sorted.map((n) => n.id));
    for (const [id, node] of this.nodes) {
      if (!keep.has(id)) {
        node.remove();
        this.nodes.delete(id);
      }
    }
    let previous = null;
    for (const n of sorted) {
      let node = this.nodes.get(n.id);
      if (!node) {
        node = this.#row(n);
        this.nodes.set(n.id, node);
      }
      this.#fillRow(node, n);
      const expected = previous ? previous.nextElementSibling : this.list.firstElementChild;
      if (expected !== node) {
        if (previous) previous.after(node);
        else this.list.prepend(node);
      }
      previous = node;
    }
    this.empty.hidden = sorted.length > 0;
    this.more.hidden = this.items.size >= this.total;
    this.markAll.disabled = this.unread === 0;
  }

  #row(n) {
    const title = el("p", { class: "note-title" });
    const message = el("p", { class: "note-message" });
    const time = el("time", { class: "note-time" });
    const read = el("button", { type: "button", class: "link-button", "data-action": "read", text: "Mark read" });
    const dismiss = el("button", { type: "button", class: "link-button", "data-action": "dismiss", text: "Dismiss" });
    read.addEventListener("click", () => this.markRead(n.id));
    dismiss.addEventListener("click", () => this.dismiss(n.id));
    return el(
      "li",
      { class: "note", "data-id": n.id },
      el("div", { class: "note-main" }, title, message, time),
      el("div", { class: "note-actions" }, read, dismiss),
    );
  }

  #fillRow(node, n) {
    node.dataset.priority = n.priority;
    node.classList.toggle("unread", !n.is_read);
    const [main, actions] = node.children;
    const [title, message, time] = main.children;
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
    actions.querySelector("[data-action=read]").hidden = n.is_read;
    actions.querySelector("[data-action=dismiss]").setAttribute("aria-label", `Dismiss “${n.title}”`);
    actions.querySelector("[data-action=read]").setAttribute("aria-label", `Mark “${n.title}” read`);
  }

  #toast(n) {
    if (this.toasted.has(n.id)) return;
    this.toasted.add(n.id);
    const urgent = n.priority === "urgent";
    const region = urgent ? this.alerts : this.toasts;
    const close = el("button", { type: "button", class: "toast-close", "aria-label": "Close", text: "×" });
    const open = el("button", { type: "button", class: "link-button", text: "Open notifications" });
    const toast = el(
      "div",
      { class: `toast toast--${n.priority}`, "data-id": n.id },
      el("p", { class: "toast-title" }, el("span", { class: "priority", "data-priority": n.priority, text: PRIORITY_LABELS[n.priority] }), " ", n.title),
      el("p", { class: "toast-message", text: n.message }),
      el("div", { class: "toast-actions" }, open),
      close,
    );
    const remove = () => toast.remove();
    close.addEventListener("click", remove);
    open.addEventListener("click", () => {
      remove();
      this.setOpen(true);
    });
    region.prepend(toast);
    const all = [...this.alerts.children, ...this.toasts.children];
    for (const extra of all.slice(MAX_TOASTS)) if (!extra.classList.contains("toast--urgent")) extra.remove();
    // Urgent ones stay until closed; high ones leave by themselves, but not from under a
    // pointer or keyboard focus.
    if (!urgent) {
      const leave = () => {
        if (toast.matches(":hover, :focus-within")) setTimeout(leave, 2000);
        else remove();
      };
      setTimeout(leave, config.highToastMs);
    }
  }
}
