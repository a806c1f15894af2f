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
import { shared, sharingAvailable, solo } from "./finrt-share.js";
import { compareIds, decodeCursor, encodeCursor } from "./finrt-source.js";
import { Tab } from "./finrt-tab.js";

export { compareIds, decodeCursor, encodeCursor };

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
  // An app's handler that throws must not cost the other tabs their events (the leader hands
  // each event to its own tab first): the error is reported and delivery goes on.
  const call = (fn, envelope) => {
    try {
      fn(envelope);
    } catch (error) {
      console.error("finrt: an event handler failed", error);
    }
  };
  const deliver = (envelope) => {
    call(onEvent, envelope);
    for (const key of [envelope.type, "*"]) for (const fn of handlers.get(key) || []) call(fn, envelope);
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
