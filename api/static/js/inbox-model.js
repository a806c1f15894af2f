// The inbox's data and how each event on the user's channel changes it: no DOM here. The
// `model` is `{items: Map(id -> notification, archived ones too), counts, total}`; `applyEvent`
// changes it in place and says what the page should do besides repainting.

export const newestFirst = (a, b) =>
  a.created_at !== b.created_at ? (a.created_at < b.created_at ? 1 : -1) : a.id < b.id ? 1 : a.id > b.id ? -1 : 0;

export function dropItem(model, id) {
  const n = model.items.get(id);
  if (!n) return;
  model.items.delete(id);
  if (!n.archived_at) model.total = Math.max(0, model.total - 1);
}

/** Returns `{handled, refreshCounts, toast, woken, seen, removeToasts, actionsDone}`: the
 * effects for the caller. Events with `counts` carry the whole badge; the older kinds carry
 * `unread_count` only, so the counts are read again after them (`refreshCounts`). */
export function applyEvent(model, type, data) {
  const effects = { handled: true, refreshCounts: false, toast: null, woken: false, seen: false, removeToasts: null, actionsDone: null };
  if (!data) return { ...effects, handled: false };
  if (data.counts) model.counts = data.counts;
  switch (type) {
    case "notification": {
      const { unread_count: unread, woken_from_snooze: woken, counts: _counts, ...n } = data;
      const known = model.items.has(n.id);
      if (!n.is_dismissed) model.items.set(n.id, n);
      if (!known && !n.is_dismissed) model.total += 1;
      if ((!known || woken) && !n.seen_at) model.counts.unseen += 1; // the read that follows confirms it
      model.counts.unread = unread;
      effects.refreshCounts = true;
      effects.woken = Boolean(woken);
      effects.seen = true;
      if ((n.priority === "high" || n.priority === "urgent") && !n.is_read) effects.toast = n;
      break;
    }
    case "notification_read": {
      const n = model.items.get(data.id);
      if (n) Object.assign(n, { is_read: true, read_at: data.read_at });
      model.counts.unread = data.unread_count;
      effects.refreshCounts = true;
      break;
    }
    case "notifications_read_all": {
      const now = new Date().toISOString();
      for (const n of model.items.values()) if (!n.is_read && !n.archived_at) Object.assign(n, { is_read: true, read_at: now });
      model.counts.unread = data.unread_count;
      effects.refreshCounts = true;
      break;
    }
    case "notification_dismissed":
      dropItem(model, data.id);
      model.counts.unread = data.unread_count;
      effects.refreshCounts = true;
      break;
    case "notifications_seen": {
      const anchor = model.items.get(data.up_to);
      for (const n of model.items.values()) if (!n.seen_at && anchor && newestFirst(n, anchor) >= 0) n.seen_at = data.seen_at;
      break;
    }
    case "notification_archived":
      for (const id of data.ids || [data.id]) {
        const n = model.items.get(id);
        if (n && !n.archived_at) {
          n.archived_at = data.archived_at;
          model.total = Math.max(0, model.total - 1);
        }
      }
      break;
    case "notification_updated": {
      // A digest grew: the same notification with its new count and title; never a toast.
      const { unread_count: unread, counts: _c, ...n } = data;
      const was = model.items.get(n.id);
      if (!was && !n.archived_at) model.total += 1;
      model.items.set(n.id, n);
      model.counts.unread = unread;
      effects.refreshCounts = !data.counts;
      break;
    }
    case "notification_unarchived": {
      const { unread_count: _u, counts: _c, ...n } = data;
      const was = model.items.get(n.id);
      if (!was || was.archived_at) model.total += 1;
      model.items.set(n.id, n);
      break;
    }
    case "notification_snoozed":
    case "notification_expired":
      dropItem(model, data.id);
      effects.removeToasts = data.id;
      break;
    case "notification_action_done": {
      const n = model.items.get(data.id);
      if (n) n.actions = data.actions;
      effects.actionsDone = { id: data.id, actions: data.actions };
      break;
    }
    default:
      return { ...effects, handled: false };
  }
  return effects;
}
