// The notification bell: the badge counts what is not seen yet (99+), the panel has tabs (All,
// Unread, Archived), counts by priority, mark-read, snooze, archive, dismiss and the
// notifications' own actions; toasts for high and urgent ones (urgent stay until closed).
// Opening the bell marks the listed ones seen. Counts come from the events, so every tab of
// the user follows the others.
import { config } from "./config.js";
import { el } from "./format.js";
import { schedule } from "./frame.js";
import { applyEvent, dropItem, newestFirst } from "./inbox-model.js";
import { buildRow, buildToast, fillActionButton, fillRow, openLink, renderCounts } from "./inbox-view.js";

const PAGE_SIZE = 50;
const MAX_TOASTS = 4;
const VIEWS = [
  ["all", "All"],
  ["unread", "Unread"],
  ["archived", "Archived"],
];

export function badgeText(count) {
  return count > 99 ? "99+" : String(count);
}

export class Inbox {
  constructor({ api, bell, badge, panel, list, empty, more, markAll, toasts, alerts, onError, onOpenFile, allowsToast }) {
    Object.assign(this, { api, bell, badge, panel, list, empty, more, markAll, toasts, alerts, onError, onOpenFile });
    // The person's toast preference for a notification (the settings panel); default: all.
    this.allowsToast = allowsToast || (() => true);
    this.items = new Map(); // every known notification, archived ones too (archived_at set)
    this.nodes = new Map();
    this.counts = { unseen: 0, unread: 0, by_priority: { low: 0, normal: 0, high: 0, urgent: 0 } };
    this.countsChanges = 0; // every change of the counts but a read of them (see #readCounts)
    this.total = 0; // of the All view, over all pages
    this.pages = 1;
    this.view = "all";
    this.buffer = null;
    this.toasted = new Set();
    this.baseTitle = document.title;
    this.render = this.render.bind(this);
    this.#buildPanelParts();

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

  /** Tabs, counts by priority and "Archive read", made here so the page's markup stays put. */
  #buildPanelParts() {
    this.tabs = el("div", { class: "inbox-tabs", role: "tablist", "aria-label": "Which notifications" });
    for (const [view, label] of VIEWS) {
      const tab = el("button", { type: "button", role: "tab", class: "inbox-tab", "data-view": view, "aria-selected": String(view === this.view), tabindex: view === this.view ? "0" : "-1", "aria-controls": this.list.id, text: label });
      tab.addEventListener("click", () => this.setView(view));
      this.tabs.append(tab);
    }
    // Arrow keys move between tabs (the WAI-ARIA tabs pattern); Tab leaves the tab list.
    this.tabs.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
      const order = VIEWS.map(([v]) => v);
      const step = event.key === "ArrowRight" ? 1 : -1;
      const next = order[(order.indexOf(this.view) + step + order.length) % order.length];
      this.setView(next);
      this.tabs.querySelector(`[data-view=${next}]`).focus();
    });
    this.countsNode = el("p", { class: "inbox-counts small", "aria-live": "polite", hidden: true });
    this.archiveRead = el("button", { type: "button", class: "link-button", id: "archive-read", text: "Archive read" });
    this.archiveRead.addEventListener("click", () => this.archiveAllRead());
    const head = this.markAll.parentElement;
    head.after(this.tabs, this.countsNode);
    this.more.after(this.archiveRead);
  }

  setOpen(open) {
    this.panel.hidden = !open;
    this.bell.setAttribute("aria-expanded", String(open));
    if (open) {
      this.#renderList();
      this.panel.querySelector("button:not([hidden]):not(:disabled)")?.focus();
      this.markSeen();
    }
  }

  setView(view) {
    this.view = view;
    for (const tab of this.tabs.children) {
      const selected = tab.dataset.view === view;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
    }
    if (view === "archived") this.loadArchived();
    this.#renderList();
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
        const [body, counts] = await Promise.all([this.api.get("/notifications", { page: 1, limit: PAGE_SIZE }), this.api.get("/notifications/counts")]);
        this.items = new Map(body.notifications.map((n) => [n.id, n]));
        this.counts = counts;
        this.countsChanges += 1;
        this.total = body.total;
        this.pages = 1;
      } while (this.again);
      if (this.view === "archived") this.loadArchived();
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
      schedule(this.render);
    } catch (error) {
      if (error.status !== 401) this.onError(`More notifications could not be loaded: ${error.message}`);
    }
  }

  async loadArchived() {
    try {
      const body = await this.api.get("/notifications", { status: "archived", limit: 100 });
      for (const n of body.notifications) this.items.set(n.id, n);
      schedule(this.render);
    } catch (error) {
      if (error.status !== 401) this.onError(`Archived notifications could not be loaded: ${error.message}`);
    }
  }

  /** Events without counts of their own (the older kinds) are followed by one read of the
   * counts, coalesced; one asked for while a read is on its way follows that read. */
  #refreshCounts() {
    this.countsWanted = true;
    if (this.countsPending) return;
    this.countsPending = setTimeout(() => this.#readCounts(), 150);
  }

  /** A read's answer is the counts when the server read them, which can be before a change
   * whose event (or answer) reached this tab while the read was on its way: another tab's
   * "seen" applied here, then the older answer arriving, would bring the badge back. So an
   * answer is kept only when nothing changed the counts meanwhile; otherwise they are read
   * again. */
  async #readCounts() {
    this.countsWanted = false;
    const changes = this.countsChanges;
    try {
      const counts = await this.api.get("/notifications/counts");
      if (changes === this.countsChanges) {
        this.counts = counts;
        schedule(this.render);
      } else {
        this.countsWanted = true;
      }
    } catch {
      // the next event or load tries again
    } finally {
      this.countsPending = null;
      if (this.countsWanted) this.#refreshCounts();
    }
  }

  handle(envelope) {
    if (this.buffer) this.buffer.push(envelope);
    else this.#apply(envelope);
  }

  #apply({ type, data }) {
    const model = { items: this.items, counts: this.counts, total: this.total };
    const effects = applyEvent(model, type, data);
    this.counts = model.counts;
    this.countsChanges += 1;
    this.total = model.total;
    if (!effects.handled) return;
    if (effects.refreshCounts) this.#refreshCounts();
    if (effects.woken) this.toasted.delete(effects.toast?.id || data.id);
    if (effects.toast) this.#toast(effects.toast);
    if (effects.seen && !this.panel.hidden) this.markSeen();
    if (effects.removeToasts) for (const toast of this.#toastsOf(effects.removeToasts)) toast.remove();
    if (effects.actionsDone) {
      for (const button of this.#toastsOf(effects.actionsDone.id).flatMap((t) => [...t.querySelectorAll("[data-act]")])) {
        const action = effects.actionsDone.actions[Number(button.dataset.act)];
        if (action) fillActionButton(button, action);
      }
    }
    schedule(this.render);
  }

  #toastsOf(id) {
    return [...this.toasts.children, ...this.alerts.children].filter((t) => t.dataset.id === id);
  }

  #drop(id) {
    const model = { items: this.items, counts: this.counts, total: this.total };
    dropItem(model, id);
    this.total = model.total;
  }

  /** Everything listed so far is seen: one call marks the newest and all older ones. */
  async markSeen() {
    if (this.seeing) {
      this.seeAgain = true; // one arrived while the call was on its way
      return;
    }
    if (this.counts.unseen === 0) return;
    const listed = [...this.items.values()].filter((n) => !n.archived_at).sort(newestFirst);
    if (!listed.length) return;
    this.seeing = true;
    try {
      const body = await this.api.post("/notifications/seen", { up_to: listed[0].id });
      this.#apply({ type: "notifications_seen", data: { up_to: listed[0].id, seen_at: new Date().toISOString(), counts: body.counts } });
    } catch (error) {
      if (error.status !== 401 && error.status !== 404) this.onError(`Could not mark them seen: ${error.message}`);
    } finally {
      this.seeing = false;
      if (this.seeAgain) {
        this.seeAgain = false;
        if (!this.panel.hidden) this.markSeen();
      }
    }
  }

  async #post(path, what, body) {
    try {
      return await this.api.post(path, body);
    } catch (error) {
      if (error.status === 404) {
        const id = /^\/notifications\/([^/]+)\//.exec(path)?.[1];
        if (id) this.#drop(decodeURIComponent(id));
        this.render();
      } else if (error.status !== 401) this.onError(`Could not ${what}: ${error.message}`);
      return null;
    }
  }

  #path(id, verb) {
    return `/notifications/${encodeURIComponent(id)}/${verb}`;
  }

  async markRead(id) {
    const n = await this.#post(this.#path(id, "read"), "mark it read");
    if (!n) return;
    const { unread_count: unread, ...stored } = n;
    this.items.set(id, stored);
    this.counts.unread = unread;
    this.countsChanges += 1;
    this.#refreshCounts();
    this.render();
    this.nodes.get(id)?.querySelector("[data-action=archive]:not([hidden]), [data-action=dismiss]")?.focus();
  }

  async dismiss(id) {
    const next = this.#neighbour(id);
    const n = await this.#post(this.#path(id, "dismiss"), "dismiss it");
    if (!n) return;
    this.#apply({ type: "notification_dismissed", data: { id, unread_count: n.unread_count } });
    this.render();
    (next?.querySelector("button") || this.markAll).focus();
  }

  async archive(id) {
    const next = this.#neighbour(id);
    const n = await this.#post(this.#path(id, "archive"), "archive it");
    if (!n) return;
    this.#apply({ type: "notification_archived", data: { ids: [id], archived_at: n.archived_at, counts: n.counts } });
    this.render();
    (next?.querySelector("button") || this.markAll).focus();
  }

  async unarchive(id) {
    const next = this.#neighbour(id);
    const n = await this.#post(this.#path(id, "unarchive"), "unarchive it");
    if (!n) return;
    this.#apply({ type: "notification_unarchived", data: n });
    this.render();
    (next?.querySelector("button") || this.markAll).focus();
  }

  async snooze(id, until) {
    const next = this.#neighbour(id);
    const n = await this.#post(this.#path(id, "snooze"), "snooze it", { until: until.toISOString() });
    if (!n) return;
    this.#apply({ type: "notification_snoozed", data: { id, counts: n.counts } });
    this.render();
    (next?.querySelector("button") || this.markAll).focus();
  }

  async archiveAllRead() {
    const body = await this.#post("/notifications/archive-read", "archive the read ones");
    if (!body) return;
    this.counts = body.counts;
    this.countsChanges += 1;
    this.#refreshCounts();
    // The events carry the ids; the archived tab reads them again when shown.
    for (const n of this.items.values()) {
      if (n.is_read && !n.archived_at) this.#apply({ type: "notification_archived", data: { ids: [n.id], archived_at: new Date().toISOString() } });
    }
    this.render();
  }

  /** A link opens (a report downloads with the token; a file is chosen on this page); an api
   * action is done by the server. Either way it is recorded done, once. */
  async act(id, index, button) {
    const n = this.items.get(id);
    const action = n?.actions?.[index] || { kind: button?.dataset.kind };
    if (action.kind === "link" && action.url) {
      await openLink(this.api, action.url, {
        onOpenFile: this.onOpenFile && ((file) => (this.setOpen(false), this.onOpenFile(file))),
        onError: this.onError,
      });
    }
    if (button) button.setAttribute("aria-busy", "true");
    const body = await this.#post(this.#path(id, `actions/${index}`), `do “${action.label || "the action"}”`);
    if (button) button.removeAttribute("aria-busy");
    if (!body) return;
    this.#apply({ type: "notification_action_done", data: { id, actions: body.actions } });
  }

  async markAllRead() {
    const body = await this.#post("/notifications/mark-all-read", "mark all read");
    if (body) this.#apply({ type: "notifications_read_all", data: { unread_count: body.unread_count } });
  }

  #neighbour(id) {
    const node = this.nodes.get(id);
    return node?.nextElementSibling || node?.previousElementSibling || null;
  }

  render() {
    const unseen = Math.max(0, this.counts.unseen || 0);
    const unread = Math.max(0, this.counts.unread || 0);
    const text = badgeText(unseen);
    this.badge.textContent = text;
    this.badge.hidden = unseen === 0;
    this.bell.dataset.count = String(unseen);
    this.bell.dataset.unread = String(unread);
    this.bell.setAttribute("aria-label", `Notifications, ${unseen === 0 ? "none" : text} new, ${unread} unread`);
    document.title = unseen ? `(${text}) ${this.baseTitle}` : this.baseTitle;
    renderCounts(this.countsNode, this.counts);
    if (!this.panel.hidden) this.#renderList();
  }

  #shown() {
    const keep = {
      all: (n) => !n.archived_at,
      unread: (n) => !n.archived_at && !n.is_read,
      archived: (n) => Boolean(n.archived_at),
    }[this.view];
    return [...this.items.values()].filter(keep).sort(newestFirst);
  }

  /** Keyed: rows are updated in place, so a focused button keeps its focus. */
  #renderList() {
    const shown = this.#shown();
    const keep = new Set(shown.map((n) => n.id));
    for (const [id, node] of this.nodes) {
      if (!keep.has(id)) {
        node.remove();
        this.nodes.delete(id);
      }
    }
    const handlers = {
      read: (id) => this.markRead(id),
      dismiss: (id) => this.dismiss(id),
      archive: (id) => this.archive(id),
      unarchive: (id) => this.unarchive(id),
      snooze: (id, until) => this.snooze(id, until),
    };
    const onAct = (id, index, button) => this.act(id, index, button);
    let previous = null;
    for (const n of shown) {
      let node = this.nodes.get(n.id);
      if (!node) {
        node = buildRow(n, handlers);
        this.nodes.set(n.id, node);
      }
      fillRow(node, n, onAct);
      const expected = previous ? previous.nextElementSibling : this.list.firstElementChild;
      if (expected !== node) {
        if (previous) previous.after(node);
        else this.list.prepend(node);
      }
      previous = node;
    }
    this.empty.textContent = { all: "No notifications.", unread: "Nothing unread.", archived: "Nothing archived." }[this.view];
    this.empty.hidden = shown.length > 0;
    const listed = [...this.items.values()].filter((n) => !n.archived_at).length;
    this.more.hidden = this.view === "archived" || listed >= this.total;
    this.markAll.disabled = (this.counts.unread || 0) === 0;
    this.archiveRead.hidden = this.view === "archived" || ![...this.items.values()].some((n) => n.is_read && !n.archived_at);
  }

  #toast(n) {
    if (this.toasted.has(n.id) || !this.allowsToast(n)) return;
    this.toasted.add(n.id);
    const urgent = n.priority === "urgent";
    const region = urgent ? this.alerts : this.toasts;
    const toast = buildToast(n, { onOpen: () => this.setOpen(true), onAct: (id, index, button) => this.act(id, index, button) });
    region.prepend(toast);
    const all = [...this.alerts.children, ...this.toasts.children];
    for (const extra of all.slice(MAX_TOASTS)) if (!extra.classList.contains("toast--urgent")) extra.remove();
    // Urgent ones stay until closed; high ones leave by themselves, but not from under a
    // pointer or keyboard focus.
    if (!urgent) {
      const leave = () => {
        if (toast.matches(":hover, :focus-within")) setTimeout(leave, 2000);
        else toast.remove();
      };
      setTimeout(leave, config.highToastMs);
    }
  }
}
