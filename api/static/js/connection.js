// The page's event connection: the public client module (/static/finrt.js), used as any other
// app would use it, and its statuses told in the page's words (connected, reconnecting,
// offline, polling). Tabs of one browser share one stream through it (see finrt.js).
import { compareIds, connect } from "../finrt.js";
import { config } from "./config.js";

export { compareIds };

export class EventConnection {
  /**
   * onEvent(envelope): an event to apply (never a duplicate);
   * onSnapshotNeeded(channel, reason): fetch that channel's snapshot again (a `reset`, or a
   *   channel started without a position);
   * onStatus({state, attempt, retryAt, channels, role}); onExpired(): the token is no longer
   *   accepted.
   */
  constructor({ token, onEvent, onSnapshotNeeded, onStatus, onExpired }) {
    Object.assign(this, { token, onEvent, onSnapshotNeeded, onStatus, onExpired });
    this.handle = null;
  }

  /** Follow `channels`; `known` gives positions to start from (others carry over). */
  start(channels, known = {}) {
    if (this.handle) return this.handle.setChannels(channels, known);
    this.handle = connect({
      channels,
      positions: known,
      token: this.token,
      timing: config,
      onEvent: (envelope) => {
        if (envelope.type !== "reset" && envelope.type !== "auth_expired") this.onEvent(envelope);
      },
      onReset: (channel, reason) => this.onSnapshotNeeded(channel, reason),
      onStatus: (state, detail) => this.#status(state, detail),
      onAuthExpired: () => this.onExpired(),
    });
  }

  stop() {
    this.handle?.close();
  }

  retryNow() {
    this.handle?.retryNow();
  }

  #status(state, detail) {
    if (state === "closed") return;
    const names = { live: "connected", reconnecting: detail.offline ? "offline" : "reconnecting" };
    const { channels, ...rest } = detail;
    // The channels are told once they are live (tests and the page wait for that).
    this.onStatus({ ...rest, ...(state === "live" ? { channels } : {}), state: names[state] || state });
  }
}
