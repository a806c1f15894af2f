// Timings of the page. Tests (and curious operators) may override any of them before the page
// loads by setting `globalThis.FINRT_CONFIG = {...}`.
const defaults = {
  // Reconnect back-off: base * 2^(attempt-1), capped, with "equal jitter" (half fixed, half
  // random) so that a thousand tabs do not come back in the same millisecond after a restart.
  backoffBaseMs: 500,
  backoffMaxMs: 30000,
  // After this many attempts in a row the indicator says "offline" rather than "reconnecting".
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
  stallAgeMs: 10000,
  highToastMs: 10000,
  // Tests: keep [channel, id] of every event applied in `window.finrt.stats.log`.
  recordEvents: false,
};

export const config = Object.freeze({ ...defaults, ...(globalThis.FINRT_CONFIG || {}) });
