// The notification settings panel: per type, "In inbox" and "Pop-up" switches; critical types
// are shown on and cannot be changed. The panel builds its own section (appended to `root`),
// follows `preferences_updated` events (a change in one tab applies in every tab), and answers
// `toastsFor(type)` for the inbox's toasts.

const LABELS = {
  report_ready: "Report ready",
  file_processed: "File processed",
  error_alert: "Errors",
  system_update: "System updates",
  collaboration_invite: "Invitations",
  data_quality_issue: "Data-quality issues",
  scheduled_report: "Scheduled reports",
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

export class PreferencesPanel {
  constructor({ api, root, onError }) {
    Object.assign(this, { api, onError });
    this.types = {};
    this.list = el("div", { class: "prefs-list" });
    this.status = el("p", { class: "muted prefs-status", role: "status" });
    this.section = el(
      "section",
      { id: "prefs", class: "panel", "aria-labelledby": "prefs-title" },
      el("h2", { id: "prefs-title", text: "Notification settings" }),
      this.list,
      this.status,
    );
    root.append(this.section);
  }

  /** Toasts for this type: on unless the person turned them off (unknown: on). */
  toastsFor(type) {
    const choice = this.types[type];
    return !choice || (choice.inbox && choice.toast);
  }

  async load() {
    try {
      this.#set((await this.api.get("/notifications/preferences")).types);
    } catch (error) {
      if (error.status !== 401) this.status.textContent = `Settings could not be loaded: ${error.message}`;
    }
  }

  /** A `preferences_updated` event: `data` is the whole set. */
  handle(data) {
    if (data?.types) this.#set(data.types);
  }

  #set(types) {
    this.types = types;
    this.status.textContent = "";
    this.#render();
  }

  #render() {
    const rows = Object.entries(this.types).map(([type, choice]) => {
      const name = LABELS[type] || type;
      const boxes = ["inbox", "toast"].map((field) => {
        const box = el("input", { type: "checkbox", "data-type": type, "data-field": field });
        box.checked = Boolean(choice[field]);
        box.disabled = Boolean(choice.critical);
        box.addEventListener("change", () => this.#change(type, field, box));
        const text = field === "inbox" ? "In inbox" : "Pop-up";
        return el("label", { class: "prefs-switch" }, box, ` ${text}`);
      });
      const note = choice.critical ? el("span", { class: "muted prefs-note", text: "always on" }) : "";
      return el("div", { class: "prefs-row", "data-type": type }, el("span", { class: "prefs-name", text: name }, note), ...boxes);
    });
    this.list.replaceChildren(...rows);
  }

  async #change(type, field, box) {
    const choice = { inbox: this.types[type].inbox, toast: this.types[type].toast, [field]: box.checked };
    box.disabled = true;
    try {
      this.#set((await this.api.put("/notifications/preferences", { types: { [type]: choice } })).types);
    } catch (error) {
      box.checked = !box.checked;
      box.disabled = false;
      this.status.textContent = `Not saved: ${error.message}`;
      if (error.status !== 401) this.onError?.(`Notification settings not saved: ${error.message}`);
    }
  }
}
