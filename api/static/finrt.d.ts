// Type declarations of FinVision Realtime's browser client, `/static/finrt.js`.
// docs/browser-client.md describes the module; CONTRACT.md section 9 fixes its entry point.

/** `user:<id>` or `file:<id>`. */
export type Channel = string;

/** An event as every transport carries it. Control events (`reset`, `auth_expired`,
 * `access_revoked`) have the same shape; `auth_expired` has `channel: null`; after an
 * `access_revoked` (`data: {channel, reason}`) the client no longer follows that channel. */
export interface Envelope<Data = any> {
  id: string | null;
  channel: Channel | null;
  type: string;
  data: Data;
  created_at: string;
  key?: string;
}

export type Status = "connecting" | "live" | "reconnecting" | "polling" | "paused" | "closed";

export interface StatusDetail {
  /** Attempts in a row since the stream last worked (0 while it works). */
  attempt: number;
  /** When the next attempt is due (ms since the epoch), while reconnecting. */
  retryAt: number | null;
  /** Reconnecting for long, or the browser says it is offline. */
  offline: boolean;
  /** How the leader reads events now. */
  mode: "stream" | "polling";
  /** This tab's part in tab sharing: "leader" holds the stream, "follower" gets events from
   * it, "solo" has its own stream (sharing is off or the browser lacks the APIs). */
  role: "leader" | "follower" | "solo";
  /** This connection's channels. */
  channels: Channel[];
}

/** Why a channel's snapshot must be read (again): "start" (the channel started without a
 * position), or the reason of a `reset` ("history_trimmed", "history_lost", "unknown_position"). */
export type ResetReason = "start" | "history_trimmed" | "history_lost" | "unknown_position" | string;

export interface Timing {
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  offlineAfterAttempts?: number;
  openTimeoutMs?: number;
  failuresBeforePolling?: number;
  pollMs?: number;
  probeMs?: number;
  stallCheckMs?: number;
}

export interface ConnectOptions {
  channels: Channel[];
  /** A bearer token (JWT). Needed for tab sharing, history catch-up and the polling fallback. */
  token?: string;
  /** A single-use stream ticket (`POST /api/v1/stream/tickets`), or a function returning a
   * fresh one for every (re)connect. */
  ticket?: string | (() => string | Promise<string>);
  /** Each event once, in order per channel, control events too. */
  onEvent: (envelope: Envelope) => void;
  onStatus?: (state: Status, detail: StatusDetail) => void;
  /** Positions to start after, e.g. a snapshot's `last_event_id`; a channel without one
   * starts at its newest event and `onReset(channel, "start")` says when to read its snapshot. */
  positions?: Record<Channel, string>;
  /** The refetch hook: read the channel's snapshot again. */
  onReset?: (channel: Channel, reason: ResetReason) => void;
  /** The token refresh hook: a new token (or null to give up) when the old one is refused. */
  refreshToken?: () => string | null | Promise<string | null>;
  /** The token expired and no new one came: the connection is closed. */
  onAuthExpired?: () => void;
  /** Share one stream among the tabs of this browser (default true). */
  share?: boolean;
  /** Groups tabs that may share a stream (default: the token's `sub`). */
  shareKey?: string;
  /** The API's address (default: this page's origin). */
  baseUrl?: string;
  /** SSE event types to listen for beyond the built-in ones. */
  types?: string[];
  timing?: Timing;
}

export interface Connection {
  close(): void;
  /** Follow other channels; `positions` as in ConnectOptions for the new ones. */
  setChannels(channels: Channel[], positions?: Record<Channel, string>): void;
  /** Stop delivering events (status "paused"); resume() delivers what came meanwhile. */
  pause(): void;
  resume(): void;
  /** Skip the wait before the next reconnect attempt. */
  retryNow(): void;
  /** `handler(envelope)` for each event of `type` ("*": every type); returns the unsubscribe. */
  on(type: string, handler: (envelope: Envelope) => void): () => void;
  readonly status: Status;
  readonly role: StatusDetail["role"];
  /** This tab's position per channel. */
  readonly positions: Record<Channel, string | null>;
}

export function connect(options: ConnectOptions): Connection;

/** Orders two event ids of one channel: -1, 0 or 1. */
export function compareIds(a: string, b: string): -1 | 0 | 1;
export function encodeCursor(positions: Record<Channel, string>): string;
export function decodeCursor(cursor: string): Record<Channel, string> | null;
export function claimsOf(token: string): { sub: string; exp?: number; [claim: string]: unknown } | null;

export class FinrtError extends Error {
  /** The HTTP status; 0 when the server did not answer. */
  status: number;
}
