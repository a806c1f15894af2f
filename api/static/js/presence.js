// Who else has the chosen file open (presence events on its stream) and what they changed
// (parameter_update events, which name who made the change).
//
// Presence events carry no id and are never in history: a `presence` snapshot replaces the set,
// `presence_join` / `presence_leave` edit it (applying one twice is harmless), and
// `presence_count` gives only the size of a big room.
import { el } from "./format.js";

const MAX_AVATARS = 4;
const MAX_ACTIVITY = 8;

function initials(userId) {
  const name = userId.split("@")[0];
  const parts = name.split(/[._-]+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0][0] + parts[1][0] : name.slice(0, 2);
  return letters.toUpperCase();
}

// A stable colour per user, so an avatar keeps its colour across reloads and pages.
function hue(userId) {
  let h = 0;
  for (const ch of userId) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

/** "0.05" as "5%" for rates, the value itself otherwise. */
export function formatParameter(name, value) {
  if (value === null || value === undefined) return "unset";
  const n = Number(value);
  if (name.endsWith("_rate") && Number.isFinite(n)) return `${Number((n * 100).toFixed(2))}%`;
  return String(value);
}

export class Collaboration {
  constructor({ root, avatars, label, activity, selfId }) {
    Object.assign(this, { root, avatars, label, activity, selfId });
    this.choose(null);
  }

  /** A new file: nobody known yet (its stream's first event is the snapshot). */
  choose(fileId) {
    this.fileId = fileId;
    this.users = new Map();
    this.count = 0;
    this.entries = [];
    this.activity.replaceChildren();
    this.#render();
  }

  /** A presence event of the chosen file; false for any other event. */
  apply({ type, data }) {
    if (!data || data.file_id !== this.fileId) return type.startsWith("presence");
    switch (type) {
      case "presence":
        this.users = new Map((data.users || []).map((u) => [u.user_id, u]));
        this.count = data.count ?? this.users.size;
        break;
      case "presence_join":
        this.users.set(data.user_id, { user_id: data.user_id });
        this.count = data.count ?? this.users.size;
        break;
      case "presence_leave":
        this.users.delete(data.user_id);
        this.count = data.count ?? this.users.size;
        break;
      case "presence_count":
        this.count = data.count;
        break;
      default:
        return false;
    }
    this.#render();
    return true;
  }

  /** A `parameter_update` of the chosen file: one line of the activity list. */
  parameter(data) {
    if (!data?.name || data.file_id !== this.fileId) return;
    const who = data.updated_by === this.selfId ? "You" : data.updated_by || "Someone";
    const change = data.previous == null
      ? `${formatParameter(data.name, data.value)}`
      : `${formatParameter(data.name, data.previous)} → ${formatParameter(data.name, data.value)}`;
    const line = el("li", { "data-user": data.updated_by || "" },
      el("strong", { text: who }), ` set ${data.name} ${change}`,
      el("time", { class: "muted", datetime: new Date().toISOString(), text: ` ${new Date().toLocaleTimeString()}` }));
    this.activity.prepend(line);
    while (this.activity.children.length > MAX_ACTIVITY) this.activity.lastElementChild.remove();
    this.root.hidden = false;
  }

  #render() {
    const others = [...this.users.keys()].filter((id) => id !== this.selfId);
    // In a big room only the first arrivals are listed; the count covers everyone else.
    const total = Math.max(others.length, this.count - (this.users.has(this.selfId) ? 1 : 0));
    const shown = others.slice(0, MAX_AVATARS);
    const items = shown.map((id) => {
      const item = el("li", { class: "avatar", title: id, "data-user": id }, initials(id));
      item.style.setProperty("--avatar-hue", String(hue(id))); // CSSOM: allowed by the CSP
      return item;
    });
    if (total > shown.length) {
      const rest = others.slice(MAX_AVATARS);
      items.push(el("li", { class: "avatar more", title: rest.join(", ") || `${total - shown.length} more`, text: `+${total - shown.length}` }));
    }
    this.avatars.replaceChildren(...items);
    this.avatars.setAttribute("aria-label", total ? `Also viewing: ${others.join(", ")}` : "Nobody else is viewing");
    this.label.textContent = total === 0 ? "Only you" : total === 1 ? "1 other viewing" : `${total} others viewing`;
    this.root.hidden = this.fileId == null;
    this.root.dataset.count = String(total);
  }
}
