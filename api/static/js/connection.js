// The tab's one event connection: the multi-channel SSE stream over the user's channel and the
// chosen file's, reopened by hand (a fresh single-use ticket each time, the position in
// `last_event_id`), with back-off and jitter, and a polling fallback over
// `GET /events/{channel}?after=` when the stream keeps failing while the API answers.
//
// EventSource's own reconnect would reuse the URL, and with it a ticket already spent, so every
// error closes the EventSource and this module decides what comes next.
import { config } from "./config.js";

const EVENT_TYPES = [
  "notification",
  "notification_read",
  "notifications_read_all",
  "notification_dismissed",
  "job_progress",
  "report_status",
  "file_processing",
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
  "message",
];
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

export function backoffMs(attempt) {
  const ceiling = Math.min(config.backoffMaxMs, config.backoffBaseMs * 2 ** (attempt - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export class EventConnection {
  /**
   * onEvent(envelope): an event to apply (never a duplicate);
   * onSnapshotNeeded(channel, reason): fetch that channel's snapshot again (a `reset`, or a
   *   channel opened from "now" because its position is unknown);
   * onStatus({state, attempt, retryAt}); onExpired(): the token is no longer accepted.
   */
  constructor({ api, onEvent, onSnapshotNeeded, onStatus, onExpired }) {
    Object.assign(this, { api, onEvent, onSnapshotNeeded, onStatus, onExpired });
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
    window.addEventListener("online", () => this.retryNow());
    window.addEventListener("offline", () => this.#status("offline"));
  }

  /** (Re)open over `channels`; `known` gives positions to start from (others carry over). */
  start(channels, known = {}) {
    const positions = {};
    for (const ch of channels) positions[ch] = known[ch] ?? this.positions[ch] ?? null;
    this.channels = [...channels];
    this.positions = positions;
    this.primed = new Set();
    this.attempt = 0;
    const gen = this.#reset();
    if (this.mode === "polling") this.#startPolling(gen);
    else this.#connect(gen);
  }

  stop() {
    this.stopped = true;
    this.#reset();
  }

  /** Skip the wait before the next attempt (the "Retry now" button, the browser back online). */
  retryNow() {
    if (this.stopped || !["reconnecting", "offline"].includes(this.state)) return;
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
    if (this.stopped && state !== "expired") return;
    this.state = state;
    this.onStatus({ state, attempt: this.attempt, mode: this.mode, ...extra });
  }

  #expire() {
    this.#status("expired");
    this.stop();
    this.onExpired();
  }

  // -- the stream ----------------------------------------------------------------------------

  async #connect(gen, { probe = false } = {}) {
    if (this.stopped) return;
    if (!probe && this.attempt === 0 && this.state !== "connected") this.#status("connecting");
    let ticket;
    try {
      ticket = (await this.api.post("/stream/tickets")).ticket;
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
    const url = new URL("/api/v1/stream", window.location.origin);
    for (const ch of this.channels) url.searchParams.append("channel", ch);
    url.searchParams.set("ticket", ticket);
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
    this.#later(gen, config.openTimeoutMs, () => {
      if (!opened) fail();
    });

    es.onopen = () => {
      if (gen !== this.generation) return;
      opened = true;
      this.mode = "stream";
      this.lastMessageAt = performance.now();
      this.#status("connected", { channels: [...this.channels] });
      this.#later(gen, HEALTHY_AFTER_MS, proven);
      this.#watchStall(gen);
      // Channels opened from "now": their snapshot is read after the server fixed the position
      // (before it sent the headers), so nothing falls between the two.
      for (const ch of unknown) if (this.positions[ch] == null) this.onSnapshotNeeded(ch, "start");
    };
    es.onerror = fail;
    const receive = (event) => {
      if (gen !== this.generation) return;
      this.lastMessageAt = performance.now();
      proven();
      this.#receiveStreamEvent(event);
    };
    for (const type of EVENT_TYPES) es.addEventListener(type, receive);
  }

  #receiveStreamEvent(event) {
    let envelope;
    try {
      envelope = JSON.parse(event.data);
    } catch {
      return;
    }
    if (envelope.type === "auth_expired") return this.#expire();
    const channel = envelope.channel;
    const before = this.positions[channel];
    // Every SSE id is the cursor over all channels: it also teaches the positions of channels
    // opened from "now".
    const cursor = event.lastEventId ? decodeCursor(event.lastEventId) : null;
    if (cursor) {
      for (const ch of this.channels) if (typeof cursor[ch] === "string") this.positions[ch] = cursor[ch];
    }
    if (!this.channels.includes(channel)) return;
    if (envelope.type === "reset") {
      if (envelope.data?.position) this.positions[channel] = envelope.data.position;
      this.onSnapshotNeeded(channel, envelope.data?.reason || "reset");
      return;
    }
    // Presence (docs/presence.md) has no id: outside the channel's order and its history.
    if (envelope.id == null) return this.onEvent(envelope);
    // Only after a switch from polling can the stream repeat what polling already applied.
    if (before && compareIds(envelope.id, before) <= 0) return;
    if (!cursor) this.positions[channel] = envelope.id;
    this.onEvent(envelope);
  }

  #retryLater(gen) {
    if (this.stopped) return;
    if (this.failures >= config.failuresBeforePolling) return this.#startPolling(gen);
    this.attempt += 1;
    const delay = backoffMs(this.attempt);
    const retryAt = Date.now() + delay;
    const offline = !navigator.onLine || this.attempt >= config.offlineAfterAttempts;
    this.#status(offline ? "offline" : "reconnecting", { retryAt });
    // Offline browsers retry when they come back online (see the constructor) or on time.
    this.#later(gen, delay, () => this.#connect(gen));
  }

  /** A quiet stream is compared with history twice: an event that history had at the first
   * look and the stream still has not carried at the second means a proxy is holding it. */
  #watchStall(gen) {
    let suspects = {};
    const check = async () => {
      if (this.mode !== "stream" || this.state !== "connected") return;
      if (performance.now() - this.lastMessageAt < config.stallCheckMs) {
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
            return this.#later(gen, config.stallCheckMs, check);
          }
          if (gen !== this.generation) return;
        }
      }
      this.#later(gen, config.stallCheckMs, check);
    };
    this.#later(gen, config.stallCheckMs, check);
  }

  // -- the polling fallback ------------------------------------------------------------------

  #startPolling(gen) {
    this.mode = "polling";
    this.pollFailures = 0;
    this.attempt = 0;
    if (this.es) this.es.close();
    this.es = null;
    this.#status("polling");
    this.#pollLoop(gen);
    this.#later(gen, config.probeMs, () => this.#probe());
  }

  /** Try the stream again; one more failure and polling resumes at once. */
  #probe() {
    const gen = this.#reset();
    this.failures = Math.max(0, config.failuresBeforePolling - 1);
    this.#connect(gen, { probe: true });
  }

  async #pollLoop(gen) {
    if (this.stopped || gen !== this.generation) return;
    let more = false;
    try {
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
      this.#status(this.attempt >= config.offlineAfterAttempts ? "offline" : "reconnecting");
    }
    const delay = more ? 0 : this.pollFailures ? backoffMs(this.pollFailures) : config.pollMs;
    this.#later(gen, delay, () => this.#pollLoop(gen));
  }

  async #pollChannel(gen, ch) {
    const after = this.positions[ch];
    const path = `/events/${encodeURIComponent(ch)}`;
    if (after == null) {
      // Position unknown: the newest events give it; the snapshot covers everything up to it.
      const body = await this.api.get(path, { limit: 1000 });
      if (gen !== this.generation) return false;
      const first = !this.primed.has(ch);
      this.primed.add(ch);
      if (body.events.length) this.positions[ch] = body.events.at(-1).id;
      if (first) this.onSnapshotNeeded(ch, "start");
      // An empty channel seen before, now with events: all of them came after the snapshot.
      else for (const envelope of body.events) this.onEvent(envelope);
      return false;
    }
    const body = await this.api.get(path, { after, limit: POLL_LIMIT });
    if (gen !== this.generation) return false;
    for (const envelope of body.events) {
      if (envelope.type === "reset") {
        if (envelope.data?.position) this.positions[ch] = envelope.data.position;
        this.onSnapshotNeeded(ch, envelope.data?.reason || "reset");
        continue;
      }
      if (compareIds(envelope.id, this.positions[ch]) <= 0) continue;
      this.positions[ch] = envelope.id;
      this.onEvent(envelope);
    }
    return body.events.length >= POLL_LIMIT;
  }
}
