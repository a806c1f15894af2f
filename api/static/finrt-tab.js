// One tab's side of the browser client (finrt.js): its channels, its own position in each,
// pause, and delivery of each event exactly once and in order, whoever holds the stream.
import { backoffMs, compareIds, positioned, TIMING } from "./finrt-source.js";

const SYNC_PAGE = 500;

/** One tab's view: its channels, its position in each, pause, and exactly-once delivery. */
export class Tab {
  constructor({ api, channels, positions, deliver, onReset, onStatus, sendWant, timing }) {
    Object.assign(this, { api, deliver, onReset, onStatus, sendWant });
    this.timing = { ...TIMING, ...timing };
    this.id = Math.random().toString(36).slice(2) + Date.now().toString(36);
    this.channels = [...channels];
    this.positions = {};
    for (const ch of this.channels) this.positions[ch] = positions?.[ch] ?? null;
    this.paused = false;
    this.closed = false;
    this.syncs = new Map(); // channel -> {queue, gen}
    this.leader = { state: "connecting", detail: {} };
    this.shown = "";
    this.role = "solo";
  }

  want() {
    const channels = this.paused || this.closed ? [] : [...this.channels];
    const positions = {};
    for (const ch of channels) if (this.positions[ch] && this.positions[ch] !== "now") positions[ch] = this.positions[ch];
    return { t: "want", tab: this.id, channels, positions };
  }

  setChannels(channels, positions = {}) {
    const next = {};
    for (const ch of channels) next[ch] = this.channels.includes(ch) ? this.positions[ch] : (positions[ch] ?? null);
    for (const ch of this.syncs.keys()) if (!channels.includes(ch)) this.syncs.delete(ch);
    this.channels = [...channels];
    this.positions = next;
    this.report();
    this.sendWant();
  }

  receive(message) {
    if (this.closed) return;
    if (message.t === "ev") this.event(message.env, message.prev);
    else if (message.t === "at") this.at(message.positions);
    else if (message.t === "status") {
      this.leader = { state: message.state, detail: message.detail || {} };
      this.report();
    }
  }

  at(positions) {
    if (this.paused) return;
    for (const ch of this.channels) {
      const there = positions[ch];
      const mine = this.positions[ch];
      if (there == null || this.syncs.has(ch)) continue;
      if (mine == null) {
        this.positions[ch] = there;
        this.onReset(ch, "start");
      } else if (mine !== "now" && there !== "now" && compareIds(mine, there) < 0) {
        this.sync(ch, null);
      }
    }
    this.report();
  }

  event(envelope, prev) {
    const ch = envelope.channel;
    if (envelope.type === "auth_expired") return this.deliver(envelope);
    if (envelope.type === "access_revoked") {
      // Its position is not the channel's; and the channel is gone for good: this tab stops
      // wanting it (so the shared stream is never reopened with it), then hears why.
      const gone = envelope.data?.channel;
      if (!this.channels.includes(gone)) return;
      this.setChannels(this.channels.filter((c) => c !== gone));
      return this.deliver(envelope);
    }
    if (this.paused || !this.channels.includes(ch)) return;
    // Presence has no place in history: it counts whenever it comes, even before a position.
    if (!positioned(envelope)) return this.deliver(envelope);
    const mine = this.positions[ch];
    if (mine == null) return; // before this tab's start on the channel: its snapshot has it
    const sync = this.syncs.get(ch);
    if (sync) return void sync.queue.push([envelope, prev]);
    if (envelope.type === "reset") {
      this.positions[ch] = envelope.data?.position || mine;
      this.deliver(envelope);
      return this.onReset(ch, envelope.data?.reason || "reset");
    }
    if (mine !== "now" && compareIds(envelope.id, mine) <= 0) return; // seen already
    if (mine === "now" || (prev && compareIds(prev, mine) <= 0) || !this.api.canRead) {
      this.positions[ch] = envelope.id;
      return this.deliver(envelope);
    }
    this.sync(ch, [envelope, prev]);
  }

  /** Fills the gap between this tab's position and what the leader hands out, from history;
   * what arrives meanwhile waits and is applied after, minus what history already gave. */
  async sync(ch, first) {
    const sync = { queue: first ? [first] : [], gen: Symbol(ch) };
    this.syncs.set(ch, sync);
    const current = () => !this.closed && !this.paused && this.syncs.get(ch) === sync;
    let failures = 0;
    while (current()) {
      let body;
      try {
        body = await this.api.get(`/events/${encodeURIComponent(ch)}`, { after: this.positions[ch], limit: SYNC_PAGE });
      } catch (error) {
        if (error.status === 401) return this.expire();
        failures += 1;
        await new Promise((resolve) => setTimeout(resolve, backoffMs(Math.min(failures, 6), this.timing)));
        continue;
      }
      if (!current()) return;
      for (const envelope of body.events) {
        if (envelope.type === "reset") {
          this.positions[ch] = envelope.data?.position || this.positions[ch];
          this.deliver(envelope);
          this.onReset(ch, envelope.data?.reason || "reset");
        } else if (compareIds(envelope.id, this.positions[ch]) > 0) {
          this.positions[ch] = envelope.id;
          this.deliver(envelope);
        }
      }
      if (body.events.length < SYNC_PAGE) break;
    }
    if (!current()) return;
    this.syncs.delete(ch);
    for (const [envelope, prev] of sync.queue) this.event(envelope, prev);
  }

  pause() {
    if (this.paused || this.closed) return;
    this.paused = true;
    this.syncs.clear();
    this.report();
    this.sendWant();
  }

  resume() {
    if (!this.paused || this.closed) return;
    this.paused = false;
    this.report();
    this.sendWant();
  }

  expire() {
    if (this.closed) return;
    this.onExpired?.();
  }

  get state() {
    if (this.closed) return "closed";
    if (this.paused) return "paused";
    const { state } = this.leader;
    if (state === "live" && this.channels.every((ch) => this.positions[ch] != null)) return "live";
    if (state === "polling" || state === "reconnecting") return state;
    return "connecting";
  }

  report(extra = {}) {
    const state = this.state;
    const { attempt = 0, retryAt = null, offline = false, mode = "stream" } = this.leader.detail;
    const detail = { attempt, retryAt, offline: state === "reconnecting" && offline, mode, role: this.role, channels: [...this.channels], ...extra };
    const key = JSON.stringify([state, attempt, retryAt, detail.offline, mode, this.role, detail.channels]);
    if (key === this.shown) return;
    this.shown = key;
    this.onStatus(state, detail);
  }
}
