// The one stream of a browser (or of a tab, where tabs cannot share): the multi-channel SSE
// stream `GET /api/v1/stream?channel=A&channel=B`, reopened by hand with a fresh single-use
// ticket and the cursor in `last_event_id`, with back-off and jitter, and a polling fallback
// over `GET /api/v1/events/{channel}?after=` when the stream keeps failing while the API answers.
//
// EventSource's own reconnect would reuse the URL, and with it a ticket already spent, so every
// error closes the EventSource and this module decides what comes next.
//
// Every event is emitted with `prev`, the id this source had seen last on that channel: a
// consumer whose own position is at or after `prev` knows nothing lies between (see finrt.js).

export const EVENT_TYPES = [
  "notification",
  "notification_read",
  "notifications_read_all",
  "notification_dismissed",
  "notification_updated",
  "notifications_seen",
  "notification_archived",
  "notification_unarchived",
  "notification_snoozed",
  "notification_action_done",
  "notification_expired",
  "preferences_updated",
  "job_progress",
  "report_status",
  "file_processing",
  "file_members",
  "file_deleted",
  "financial_data_update",
  "metric_update",
  "chart_data_update",
  "parameter_update",
  "presence",
  "presence_join",
  "presence_leave",
  "presence_count",
  "reset",
  "auth_expired",
  "access_revoked",
  "message",
];

export const TIMING = {
  // Reconnect back-off: base * 2^(attempt-1), capped, with "equal jitter" (half fixed, half
  // random) so that a thousand tabs do not come back in the same millisecond after a restart.
  backoffBaseMs: 500,
  backoffMaxMs: 30000,
  // After this many attempts in a row the status detail says `offline: true`.
  offlineAfterAttempts: 6,
  // A stream that has not opened after this long counts as failed (a buffering proxy).
  openTimeoutMs: 10000,
  // Stream failures in a row, with the API itself reachable, before falling back to polling.
  failuresBeforePolling: 3,
  pollMs: 2000,
  // While polling, try the stream again this often.
  probeMs: 30000,
  // A stream quiet for this long is checked against history: events it should have carried
  // mean a proxy holds it back.
  stallCheckMs: 45000,
};
const POLL_LIMIT = 500;
// A stream that has carried an event, or stayed open this long, has proved itself.
const HEALTHY_AFTER_MS = 5000;

function toBase64Url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The multi-channel stream's cursor: base64url (no padding) of {"<channel>": "<id>"}. */
export function encodeCursor(positions) {
  return toBase64Url(JSON.stringify(positions));
}

export function decodeCursor(cursor) {
  try {
    const b64 = cursor.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const doc = JSON.parse(new TextDecoder().decode(bytes));
    return doc && typeof doc === "object" && !Array.isArray(doc) ? doc : null;
  } catch {
    return null;
  }
}

/** Orders two per-channel ids ("<ms>-<seq>"); -1, 0 or 1. */
export function compareIds(a, b) {
  const [am, as] = a.split("-").map(Number);
  const [bm, bs] = b.split("-").map(Number);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}

export function backoffMs(attempt, timing = TIMING) {
  const ceiling = Math.min(timing.backoffMaxMs, timing.backoffBaseMs * 2 ** (attempt - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** Events without a position of their own (presence) never move a cursor. */
export function positioned(envelope) {
  return typeof envelope.id === "string" && !envelope.type.startsWith("presence");
}

export class StreamSource {
  /**
   * api: {get(path, params), post(path), origin, canRead}; emit: {event(envelope, prev),
   * at(positions), status(state, detail), expired()}; types: extra SSE event types.
   */
  constructor({ api, emit, timing = {}, types = [] }) {
    this.api = api;
    this.emit = emit;
    this.timing = { ...TIMING, ...timing };
    this.types = [...new Set([...EVENT_TYPES, ...types])];
    this.channels = [];
    this.positions = {};
    this.mode = "stream";
    this.generation = 0;
    this.attempt = 0;
    this.failures = 0;
    this.es = null;
    this.timers = new Set();
    this.stopped = false;
    this.state = null;
    this.onOnline = () => this.retryNow();
    this.onOffline = () => this.state && this.#status(this.state === "polling" ? "polling" : "reconnecting", { offline: true });
    globalThis.addEventListener?.("online", this.onOnline);
    globalThis.addEventListener?.("offline", this.onOffline);
  }

  /** (Re)open over `channels`: channels already followed keep their position, new ones start
   * at `known[ch]` (null: the channel's newest event, looked up first). An empty list closes. */
  start(channels, known = {}) {
    const positions = {};
    for (const ch of channels) positions[ch] = this.channels.includes(ch) ? this.positions[ch] : (known[ch] ?? null);
    this.channels = [...channels];
    this.positions = positions;
    this.attempt = 0;
    const gen = this.#reset();
    if (!channels.length) return this.#status("idle");
    if (this.mode === "polling") this.#startPolling(gen);
    else this.#connect(gen);
  }

  stop() {
    this.stopped = true;
    this.#reset();
    globalThis.removeEventListener?.("online", this.onOnline);
    globalThis.removeEventListener?.("offline", this.onOffline);
  }

  /** Skip the wait before the next attempt (a "Retry now" button, the browser back online). */
  retryNow() {
    if (this.stopped || this.state !== "reconnecting" || !this.channels.length) return;
    const gen = this.#reset();
    if (this.mode === "polling") this.#pollLoop(gen);
    else this.#connect(gen);
  }

  #reset() {
    this.generation += 1;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    if (this.es) this.es.close();
    this.es = null;
    return this.generation;
  }

  #later(gen, ms, fn) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (gen === this.generation) fn();
    }, ms);
    this.timers.add(timer);
  }

  #status(state, extra = {}) {
    if (this.stopped) return;
    this.state = state;
    const offline = state === "reconnecting" && (typeof navigator !== "undefined" && navigator.onLine === false || this.attempt >= this.timing.offlineAfterAttempts);
    this.emit.status(state, { attempt: this.attempt, mode: this.mode, offline, channels: [...this.channels], ...extra });
  }

  #expire() {
    this.#reset();
    this.emit.expired();
  }

  /** The user may no longer read a channel: the server said so on the stream (and keeps the
   * rest open), or refused it (403, 404) while polling or looking up a position. The channel
   * is dropped for good, so that the others go on, and the app hears an `access_revoked`. */
  #lose(envelope) {
    const gone = envelope.data?.channel;
    this.channels = this.channels.filter((ch) => ch !== gone);
    delete this.positions[gone];
    this.emit.event(envelope, null);
    if (!this.channels.length) {
      this.#reset();
      this.#status("idle");
    }
  }

  /** `access_revoked` for a channel the API refused with `error`, else null. */
  #refusal(ch, error) {
    if (error?.status !== 403 && error?.status !== 404) return null;
    const data = { channel: ch, reason: error.message || "refused" };
    return { id: null, channel: ch, type: "access_revoked", data, created_at: new Date().toISOString() };
  }

  /** Positions of channels that have none: the newest id in each channel's history (the
   * server's `position`), so that a later reconnect, or another tab taking over, resumes from
   * a real id and never from "now". Without a token the stream fixes them ("from now"). */
  async #resolvePositions(gen) {
    if (!this.api.canRead) return;
    for (const ch of [...this.channels]) {
      if (this.positions[ch] != null) continue;
      let body;
      try {
        body = await this.api.get(`/events/${encodeURIComponent(ch)}`, { limit: 1 });
      } catch (error) {
        const refused = this.#refusal(ch, error);
        if (!refused || gen !== this.generation) throw error;
        this.#lose(refused);
        continue;
      }
      if (gen !== this.generation) return;
      const newest = body.events.length ? body.events.at(-1).id : null;
      this.positions[ch] = body.position || newest;
    }
  }

  // -- the stream ----------------------------------------------------------------------------

  async #connect(gen, { probe = false } = {}) {
    if (this.stopped) return;
    if (!probe && this.attempt === 0 && this.state !== "live") this.#status("connecting");
    let ticket;
    try {
      await this.#resolvePositions(gen);
      if (gen !== this.generation) return;
      this.emit.at({ ...this.positions });
      ticket = await this.api.ticket();
    } catch (error) {
      if (gen !== this.generation) return;
      if (error.status === 401) return this.#expire();
      // The API itself does not answer (a restart, the network): not the stream's fault.
      return probe ? this.#startPolling(gen) : this.#retryLater(gen);
    }
    if (gen !== this.generation) return;

    const unknown = this.channels.filter((ch) => this.positions[ch] == null);
    const known = {};
    for (const ch of this.channels) if (this.positions[ch] != null) known[ch] = this.positions[ch];
    const url = new URL("/api/v1/stream", this.api.origin);
    for (const ch of this.channels) url.searchParams.append("channel", ch);
    url.searchParams.set(ticket.name, ticket.value);
    if (Object.keys(known).length) url.searchParams.set("last_event_id", encodeCursor(known));

    const es = new EventSource(url);
    this.es = es;
    let opened = false;
    let healthy = false;
    const proven = () => {
      if (healthy || gen !== this.generation) return;
      healthy = true;
      this.attempt = 0;
      this.failures = 0;
    };
    const fail = () => {
      if (gen !== this.generation) return;
      es.close();
      this.es = null;
      if (!healthy) this.failures += 1;
      this.#retryLater(gen);
    };
    this.#later(gen, this.timing.openTimeoutMs, () => {
      if (!opened) fail();
    });

    es.onopen = () => {
      if (gen !== this.generation) return;
      opened = true;
      this.mode = "stream";
      this.lastMessageAt = performance.now();
      // Channels opened "from now" (no token to look their position up): the server fixed it
      // before it answered, so a snapshot read from here on misses nothing.
      if (unknown.length) this.emit.at(Object.fromEntries(unknown.map((ch) => [ch, "now"])));
      this.#status("live");
      this.#later(gen, HEALTHY_AFTER_MS, proven);
      this.#watchStall(gen);
    };
    es.onerror = fail;
    const receive = (event) => {
      if (gen !== this.generation) return;
      this.lastMessageAt = performance.now();
      proven();
      this.#receiveStreamEvent(event);
    };
    for (const type of this.types) es.addEventListener(type, receive);
  }

  #receiveStreamEvent(event) {
    let envelope;
    try {
      envelope = JSON.parse(event.data);
    } catch {
      return;
    }
    if (envelope.type === "auth_expired") {
      this.emit.event(envelope, null);
      if (!this.api.refreshable) return this.#expire();
      // The next ticket request meets the old token's 401 and refreshes it first.
      const gen = this.#reset();
      return this.#connect(gen);
    }
    if (envelope.type === "access_revoked") return this.#lose(envelope);
    const channel = envelope.channel;
    const before = this.positions[channel];
    const cursor = event.lastEventId ? decodeCursor(event.lastEventId) : null;
    if (!this.channels.includes(channel)) return;
    if (envelope.type === "reset") {
      if (envelope.data?.position) this.positions[channel] = envelope.data.position;
      return this.emit.event(envelope, null);
    }
    if (!positioned(envelope)) return this.emit.event(envelope, null);
    // Only after a switch from polling can the stream repeat what polling already emitted.
    if (before && compareIds(envelope.id, before) <= 0) return;
    // Every SSE id is the cursor over all channels: it also teaches positions opened "from now".
    if (cursor) {
      for (const ch of this.channels) if (typeof cursor[ch] === "string" && ch !== channel) this.positions[ch] = cursor[ch];
    }
    this.positions[channel] = envelope.id;
    this.emit.event(envelope, before ?? null);
  }

  #retryLater(gen) {
    if (this.stopped) return;
    if (this.failures >= this.timing.failuresBeforePolling) return this.#startPolling(gen);
    this.attempt += 1;
    const delay = backoffMs(this.attempt, this.timing);
    this.#status("reconnecting", { retryAt: Date.now() + delay });
    this.#later(gen, delay, () => this.#connect(gen));
  }

  /** A quiet stream is compared with history twice: an event that history had at the first
   * look and the stream still has not carried at the second means a proxy is holding it. */
  #watchStall(gen) {
    if (!this.api.canRead) return;
    let suspects = {};
    const check = async () => {
      if (this.mode !== "stream" || this.state !== "live") return;
      if (performance.now() - this.lastMessageAt < this.timing.stallCheckMs) {
        suspects = {};
      } else {
        for (const [ch, id] of Object.entries(suspects)) {
          const at = this.positions[ch];
          if (!at || compareIds(at, id) < 0) {
            this.failures += 1;
            if (this.es) this.es.close();
            this.es = null;
            return this.#retryLater(gen);
          }
        }
        suspects = {};
        for (const ch of this.channels) {
          const after = this.positions[ch];
          if (!after) continue;
          try {
            const body = await this.api.get(`/events/${encodeURIComponent(ch)}`, { after, limit: 1 });
            const first = body.events[0];
            if (first && first.type !== "reset") suspects[ch] = first.id;
          } catch {
            return this.#later(gen, this.timing.stallCheckMs, check);
          }
          if (gen !== this.generation) return;
        }
      }
      this.#later(gen, this.timing.stallCheckMs, check);
    };
    this.#later(gen, this.timing.stallCheckMs, check);
  }

  // -- the polling fallback ------------------------------------------------------------------

  #startPolling(gen) {
    if (!this.api.canRead) return this.#retryLater(gen);
    this.mode = "polling";
    this.pollFailures = 0;
    this.attempt = 0;
    if (this.es) this.es.close();
    this.es = null;
    this.#status("polling");
    this.#pollLoop(gen);
    this.#later(gen, this.timing.probeMs, () => this.#probe());
  }

  /** Try the stream again; one more failure and polling resumes at once. */
  #probe() {
    const gen = this.#reset();
    this.failures = Math.max(0, this.timing.failuresBeforePolling - 1);
    this.#connect(gen, { probe: true });
  }

  async #pollLoop(gen) {
    if (this.stopped || gen !== this.generation) return;
    let more = false;
    try {
      await this.#resolvePositions(gen);
      for (const ch of [...this.channels]) {
        more = (await this.#pollChannel(gen, ch)) || more;
        if (gen !== this.generation) return;
      }
      if (this.pollFailures || this.state !== "polling") {
        this.pollFailures = 0;
        this.attempt = 0;
        this.#status("polling");
      }
    } catch (error) {
      if (gen !== this.generation) return;
      if (error.status === 401) return this.#expire();
      this.pollFailures += 1;
      this.attempt = this.pollFailures;
      this.#status("reconnecting");
    }
    const delay = more ? 0 : this.pollFailures ? backoffMs(this.pollFailures, this.timing) : this.timing.pollMs;
    this.#later(gen, delay, () => this.#pollLoop(gen));
  }

  async #pollChannel(gen, ch) {
    const after = this.positions[ch];
    let body;
    try {
      body = await this.api.get(`/events/${encodeURIComponent(ch)}`, { after, limit: POLL_LIMIT });
    } catch (error) {
      const refused = this.#refusal(ch, error);
      if (!refused || gen !== this.generation) throw error;
      this.#lose(refused);
      return false;
    }
    if (gen !== this.generation) return false;
    for (const envelope of body.events) {
      if (envelope.type === "reset") {
        if (envelope.data?.position) this.positions[ch] = envelope.data.position;
        this.emit.event(envelope, null);
        continue;
      }
      const before = this.positions[ch];
      if (compareIds(envelope.id, before) <= 0) continue;
      this.positions[ch] = envelope.id;
      this.emit.event(envelope, before);
    }
    return body.events.length >= POLL_LIMIT;
  }
}
