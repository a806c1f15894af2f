// Who holds the stream: the leader's union of what the tabs want (Hub), a tab on its own
// (solo), or the tabs of one browser sharing one stream (shared: a Web Lock elects the leader,
// a BroadcastChannel carries events, statuses and wants).
import { compareIds, StreamSource } from "./finrt-source.js";

// A new leader waits this long for the other tabs to say what they want before it opens.
const SETTLE_MS = 150;
// How often a leader drops the wants of tabs that are gone (their tab lock is free).
const PRUNE_MS = 2000;

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

export function sharingAvailable() {
  return typeof BroadcastChannel === "function" && typeof navigator !== "undefined" && typeof navigator.locks?.request === "function";
}

/** No sharing: this tab's own stream, as a hub of one. */
export function solo(tab, hubOptions) {
  const hub = new Hub({ ...hubOptions, emit: (m) => tab.receive(m) });
  queueMicrotask(() => hub.want(tab.want()));
  return {
    want: (w) => hub.want(w),
    retry: () => hub.source.retryNow(),
    close: () => hub.stop(),
  };
}

export function shared(tab, scope, hubOptions) {
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
