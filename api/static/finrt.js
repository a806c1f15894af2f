// FinVision Realtime's browser client: `connect({channels, token?, ticket?, onEvent, onStatus?})`.
// No build step: import it as an ES module from `/static/finrt.js`. docs/browser-client.md
// describes it; finrt.d.ts declares it.
//
// The tabs of one browser profile share one stream when the browser has the Web Locks API and
// BroadcastChannel: the tab holding the lock `finrt:leader:<scope>` (for its whole life) runs the
// stream over the union of the channels every tab wants and hands each event to the others.
// Every tab keeps its own position per channel and applies an event only once, in order: an
// event comes with `prev` (the leader's position before it); a tab whose position is behind
// `prev` fills the gap from history (`GET /api/v1/events/{channel}?after=`) first. When the
// leader goes, the next lock holder resumes from the oldest position the tabs report.
import { backoffMs, compareIds, decodeCursor, encodeCursor, positioned, StreamSource } from "./finrt-source.js";

export { compareIds, decodeCursor, encodeCursor };

const SYNC_PAGE = 500;
// A new leader waits this long for the other tabs to say what they want before it opens.
const SETTLE_MS = 150;
// How often a leader drops the wants of tabs that are gone (their tab lock is free).
const PRUNE_MS = 2000;

export class FinrtError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

/** The JWT's claims, unverified: the client only needs `sub` (to group tabs) and `exp`. */
export function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return claims && typeof claims.sub === "string" ? claims : null;
  } catch {
    return null;
  }
}

function makeApi({ baseUrl, token, ticket, refreshToken }) {
  const origin = new URL(baseUrl || globalThis.location.href).origin;
  const auth = { token, ticket, refreshing: null };
  async function refresh() {
    if (!refreshToken) return null;
    auth.refreshing ??= Promise.resolve()
      .then(refreshToken)
      .catch(() => null)
      .finally(() => setTimeout(() => (auth.refreshing = null), 0));
    const fresh = await auth.refreshing;
    if (fresh) auth.token = fresh;
    return fresh;
  }
  async function send(method, path, params, retried = false) {
    const url = new URL("/api/v1" + path, origin);
    for (const [name, value] of Object.entries(params || {})) if (value != null) url.searchParams.set(name, String(value));
    const headers = auth.token ? { Authorization: `Bearer ${auth.token}` } : {};
    let response;
    try {
      response = await fetch(url, { method, headers, cache: "no-store" });
    } catch {
      throw new FinrtError(0, "the server did not answer");
    }
    if (response.status === 401 && !retried && (await refresh())) return send(method, path, params, true);
    if (!response.ok) {
      let detail = response.statusText;
      try {
        detail = (await response.json()).detail || detail;
      } catch {}
      throw new FinrtError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return response.json();
  }
  return {
    origin,
    refresh,
    get canRead() {
      return Boolean(auth.token);
    },
    get refreshable() {
      return Boolean(refreshToken);
    },
    get token() {
      return auth.token;
    },
    get: (path, params) => send("GET", path, params),
    /** A single-use ticket for the next stream: the one given (string, once), one from the
     * given function, or a fresh one bought with the token. */
    async ticket() {
      const given = auth.ticket;
      if (typeof given === "string") {
        auth.ticket = null;
        return { name: "ticket", value: given };
      }
      if (typeof given === "function") return { name: "ticket", value: await given() };
      if (!auth.token) throw new FinrtError(401, "no token and no ticket left");
      return { name: "ticket", value: (await send("POST", "/stream/tickets")).ticket };
    },
  };
}

/** One tab's view: its channels, its position in each, pause, and exactly-once delivery. */
class Tab {
  constructor({ api, channels, positions, deliver, onReset, onStatus, sendWant, timing }) {
    Object.assign(this, { api, deliver, onReset, onStatus, sendWant, timing });
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
    if (this.paused || !this.channels.includes(ch)) return;
    const mine = this.positions[ch];
    if (mine == null) return; // before this tab's start on the channel: its snapshot has it
    if (!positioned(envelope)) return this.deliver(envelope);
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

/** The leader's side: the union of what the tabs want, on one StreamSource. */
class Hub {
  constructor({ api, timing, types, emit, onExpired }) {
    this.wants = new Map();
    this.emit = emit;
    this.last = null;
    this.timer = null;
    this.started = false;
    this.source = new StreamSource({
      api,
      timing,
      types,
      emit: {
        event: (env, prev) => emit({ t: "ev", env, prev }, env.type === "auth_expired"),
        at: (positions) => emit({ t: "at", positions }),
        status: (state, detail) => emit((this.last = { t: "status", state, detail })),
        expired: onExpired,
      },
    });
  }

  want({ tab, channels, positions }, settleMs = 0) {
    this.wants.set(tab, { channels, positions });
    this.schedule(settleMs);
  }

  drop(tab) {
    if (this.wants.delete(tab)) this.schedule(0);
  }

  schedule(ms) {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.update();
    }, ms);
  }

  update() {
    const union = [];
    const known = {};
    for (const { channels, positions } of this.wants.values()) {
      for (const ch of channels) {
        if (!union.includes(ch)) union.push(ch);
        const p = positions[ch];
        if (p && (!known[ch] || compareIds(p, known[ch]) < 0)) known[ch] = p;
      }
    }
    const now = this.source.channels;
    if (this.started && union.length === now.length && union.every((ch) => now.includes(ch))) {
      this.emit({ t: "at", positions: { ...this.source.positions } });
      if (this.last) this.emit(this.last);
      return;
    }
    this.started = true;
    this.source.start(union, known);
  }

  stop() {
    clearTimeout(this.timer);
    this.source.stop();
  }
}

function sharingAvailable() {
  return typeof BroadcastChannel === "function" && typeof navigator !== "undefined" && typeof navigator.locks?.request === "function";
}

/**
 * Connects to the channels. Options beyond the contract's: `positions` ({channel: id} to start
 * after, e.g. a snapshot's `last_event_id`), `onReset(channel, reason)` (refetch that
 * channel's snapshot; reason "start" for a channel started without a position),
 * `refreshToken()` (a new token, or null), `onAuthExpired()`, `share` (default true),
 * `shareKey`, `baseUrl`, `types` (more SSE event types), `timing`.
 */
export function connect(options) {
  const { channels = [], positions, onEvent, onStatus, onReset, onAuthExpired, share = true, timing, types } = options;
  if (typeof onEvent !== "function") throw new TypeError("connect() needs onEvent");
  const api = makeApi(options);
  const handlers = new Map();
  const deliver = (envelope) => {
    onEvent(envelope);
    for (const key of [envelope.type, "*"]) for (const fn of handlers.get(key) || []) fn(envelope);
  };
  let coordinator = null;
  const tab = new Tab({
    api,
    channels,
    positions,
    timing,
    deliver,
    onReset: (ch, reason) => onReset?.(ch, reason),
    onStatus: (state, detail) => onStatus?.(state, detail),
    sendWant: () => coordinator?.want(tab.want()),
  });
  let expiryTimer = null;
  tab.onExpired = () => {
    if (tab.closed) return;
    handle.close();
    onAuthExpired?.();
  };
  const claims = api.token ? claimsOf(api.token) : null;
  const scopeKey = options.shareKey || claims?.sub;
  const scope = scopeKey ? `${api.origin}|${scopeKey}` : null;
  const hubOptions = { api, timing, types, onExpired: () => tab.onExpired() };
  coordinator = share && scope && sharingAvailable() ? shared(tab, scope, hubOptions) : solo(tab, hubOptions);
  // A follower never sees the server's auth_expired (the leader's stream carries it), so the
  // token's own expiry is watched here.
  if (claims?.exp && !options.refreshToken) {
    const ms = Math.min(2 ** 31 - 1, claims.exp * 1000 - Date.now());
    expiryTimer = setTimeout(() => {
      deliver({ id: null, channel: null, type: "auth_expired", data: { reason: "token expired" }, created_at: new Date().toISOString() });
      tab.onExpired();
    }, Math.max(0, ms));
  }

  const handle = {
    close() {
      if (tab.closed) return;
      clearTimeout(expiryTimer);
      tab.closed = true;
      coordinator.close();
      tab.report();
    },
    setChannels: (list, known) => tab.setChannels(list, known),
    pause: () => tab.pause(),
    resume: () => tab.resume(),
    retryNow: () => coordinator.retry(),
    /** Calls `fn(envelope)` for each event of `type` ("*": all); returns the unsubscribe. */
    on(type, fn) {
      if (!handlers.has(type)) handlers.set(type, new Set());
      handlers.get(type).add(fn);
      return () => handlers.get(type).delete(fn);
    },
    get status() {
      return tab.state;
    },
    get role() {
      return tab.role;
    },
    get positions() {
      return { ...tab.positions };
    },
  };
  tab.report();
  return handle;
}

/** No sharing: this tab's own stream, as a hub of one. */
function solo(tab, hubOptions) {
  const hub = new Hub({ ...hubOptions, emit: (m) => tab.receive(m) });
  queueMicrotask(() => hub.want(tab.want()));
  return {
    want: (w) => hub.want(w),
    retry: () => hub.source.retryNow(),
    close: () => hub.stop(),
  };
}

function shared(tab, scope, hubOptions) {
  const bus = new BroadcastChannel(`finrt:${scope}`);
  let hub = null;
  let ready = false;
  let releaseTab, releaseLeader, pruner;
  const tabLock = `finrt:tab:${scope}:${tab.id}`;
  const post = (m) => {
    try {
      bus.postMessage(m);
    } catch {} // closed
  };
  tab.role = "follower";

  bus.onmessage = ({ data: m }) => {
    if (tab.closed) return;
    if (m.t === "ev" || m.t === "at" || m.t === "status") return tab.receive(m);
    if (m.t === "leader" && ready) {
      tab.leader = { state: "connecting", detail: {} };
      tab.report();
      return post(tab.want());
    }
    if (!hub) return;
    if (m.t === "want") hub.want(m);
    else if (m.t === "bye") hub.drop(m.tab);
    else if (m.t === "retry") hub.source.retryNow();
  };

  // The tab's own lock tells the leader this tab is alive (a crashed tab's lock is freed).
  navigator.locks.request(tabLock, () => {
    if (tab.closed) return;
    ready = true;
    if (!hub) post(tab.want());
    return new Promise((resolve) => (releaseTab = resolve));
  });

  const campaign = () =>
    navigator.locks.request(`finrt:leader:${scope}`, { mode: "exclusive" }, () => {
    if (tab.closed) return;
    tab.role = "leader";
    tab.leader = { state: "connecting", detail: {} };
    tab.report();
    hub = new Hub({
      ...hubOptions,
      emit: (m, local = false) => {
        tab.receive(m);
        if (!local) post(m);
      },
    });
    hub.want(tab.want(), SETTLE_MS);
    post({ t: "leader", leader: tab.id });
    pruner = setInterval(async () => {
      const held = new Set((await navigator.locks.query()).held.map((lock) => lock.name));
      for (const id of hub?.wants.keys() || []) if (id !== tab.id && !held.has(`finrt:tab:${scope}:${id}`)) hub.drop(id);
    }, PRUNE_MS);
    return new Promise((resolve) => (releaseLeader = resolve));
  });
  campaign();

  /** Steps down (the next tab in line leads) and queues for the lock again. */
  function resign() {
    if (!hub) return;
    clearInterval(pruner);
    hub.stop();
    hub = null;
    releaseLeader?.();
    tab.role = "follower";
    tab.leader = { state: "connecting", detail: {} };
    tab.report();
    if (!tab.closed) campaign();
  }
  // A frozen tab (Chrome freezes some background tabs) runs nothing: a leader must not keep
  // the lock while frozen. It rejoins the line when it thaws.
  const onFreeze = () => resign();
  globalThis.document?.addEventListener("freeze", onFreeze);
  const onResume = () => ready && post(tab.want());
  globalThis.document?.addEventListener("resume", onResume);

  return {
    want(w) {
      if (hub) hub.want(w);
      else if (ready) post(w);
    },
    retry() {
      if (hub) hub.source.retryNow();
      else post({ t: "retry" });
    },
    close() {
      post({ t: "bye", tab: tab.id });
      globalThis.document?.removeEventListener("freeze", onFreeze);
      globalThis.document?.removeEventListener("resume", onResume);
      clearInterval(pruner);
      hub?.stop();
      hub = null;
      releaseLeader?.();
      releaseTab?.();
      bus.close();
    },
  };
}
