// The dashboard page: wires the token, the one event connection, and the page's parts.
//
// Order of a file's data: the dashboard snapshot first, then the stream from the snapshot's
// position (`last_event_id`), so no change between the two is missed. The user's channel has
// no position in its snapshot (the notification list), so it is opened from "now" and the list
// is read once the stream is open. A `reset` refetches the channel's snapshot; events arriving
// meanwhile wait and are applied after it.
import { createApi } from "./api.js";
import { claimsOf, forgetToken, takeToken } from "./auth.js";
import { MetricCards } from "./cards.js";
import { LineChart } from "./chart.js";
import { config } from "./config.js";
import { compareIds, EventConnection } from "./connection.js";
import { FilePanel } from "./files.js";
import { schedule, stats } from "./frame.js";
import { Inbox } from "./inbox.js";
import { Collaboration } from "./presence.js";
import { PreferencesPanel } from "./preferences.js";
import { ReportPanel } from "./reports.js";
import { WhatIfPanel } from "./whatif.js";

const $ = (id) => document.getElementById(id);
window.finrt = { stats };

const banner = $("banner");
function showBanner(text) {
  banner.textContent = text;
  banner.hidden = !text;
}

// -- the connection indicator ------------------------------------------------------------------

const indicator = $("connection");
const indicatorText = $("connection-text");
const countdownText = $("connection-countdown");
const retryButton = $("connection-retry");
let indicatorStatus = { state: "connecting" };
let countdown = null;

function renderIndicator() {
  const { state, attempt, retryAt } = indicatorStatus;
  const seconds = retryAt ? Math.max(0, Math.ceil((retryAt - Date.now()) / 1000)) : 0;
  const texts = {
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: `Reconnecting (attempt ${attempt})…`,
    offline: `Offline (attempt ${attempt})`,
    polling: "Connected by polling: the live stream is unavailable",
    expired: "Session expired",
  };
  indicator.dataset.state = state;
  const text = texts[state] || state;
  // Only the state is announced (aria-live); the countdown ticks silently beside it.
  if (indicatorText.textContent !== text) indicatorText.textContent = text;
  countdownText.textContent = state === "offline" && seconds ? `retrying in ${seconds} s` : "";
  retryButton.hidden = !(state === "offline" || (state === "reconnecting" && attempt >= 2));
  stats.state = state;
  stats.attempt = attempt || 0;
  if (indicatorStatus.channels) stats.channels = indicatorStatus.channels;
  if (indicatorStatus.role) stats.role = indicatorStatus.role;
}

function onStatus(status) {
  indicatorStatus = status;
  clearInterval(countdown);
  countdown = null;
  if (status.state === "offline") countdown = setInterval(renderIndicator, 1000);
  renderIndicator();
}

// -- start -------------------------------------------------------------------------------------

const token = takeToken();
const claims = token ? claimsOf(token) : null;

if (!claims) {
  onStatus({ state: "expired" });
  indicatorText.textContent = "Not signed in";
  showBanner(
    "This page needs a token: open it from the link that `make run` prints (it ends in ?token=…), " +
      "or add ?token=<your token> to the address.",
  );
} else {
  start(claims.sub);
}

function start(userId) {
  const userChannel = `user:${userId}`;
  let expired = false;
  let conn = null;

  function expire() {
    if (expired) return;
    expired = true;
    forgetToken();
    conn?.stop();
    onStatus({ state: "expired" });
    showBanner("Your session has expired. Open the dashboard again from a fresh link.");
    for (const control of document.querySelectorAll("form button, form input, form select")) control.disabled = true;
  }

  const api = createApi(token, expire);
  const reportError = (text) => showBanner(text);

  const cards = new MetricCards({ root: $("cards"), empty: $("cards-empty"), toggle: $("cards-toggle"), state: $("cards-state") });
  const chart = new LineChart({ svg: $("chart"), legend: $("chart-legend"), summary: $("chart-summary"), toggle: $("chart-toggle"), state: $("chart-state") });
  const prefs = new PreferencesPanel({ api, root: $("main"), onError: reportError });
  const inbox = new Inbox({
    api,
    allowsToast: (n) => prefs.toastsFor(n.type),
    bell: $("bell"),
    badge: $("bell-badge"),
    panel: $("inbox"),
    list: $("inbox-list"),
    empty: $("inbox-empty"),
    more: $("inbox-more"),
    markAll: $("mark-all-read"),
    toasts: $("toasts"),
    alerts: $("toasts-alert"),
    onError: reportError,
    onOpenFile: (id) => selectFile(id),
  });
  const whatIf = new WhatIfPanel({ api, form: $("whatif-form"), status: $("whatif-status"), onParameters: (p) => cards.setParameters(p), onError: reportError });
  const reports = new ReportPanel({ api, form: $("report-form"), format: $("report-format"), button: $("report-button"), list: $("reports"), onError: reportError });
  const files = new FilePanel({
    api,
    select: $("file-select"),
    info: $("file-info"),
    processing: $("processing"),
    processingLabel: $("processing-label"),
    processingBar: $("processing-bar"),
    form: $("upload-form"),
    input: $("upload-file"),
    status: $("upload-status"),
    onSelect: (id) => selectFile(id),
    onUploaded: (id, position) => selectFile(id, position),
    onError: reportError,
  });

  const collab = new Collaboration({ root: $("collab"), avatars: $("presence-avatars"), label: $("presence-label"), activity: $("activity"), selfId: userId });

  // -- the chosen file ---------------------------------------------------------------------

  let fileId = null;
  // The figures' period: the stored (monthly) snapshot moves with each event; quarterly and
  // yearly figures are read again (at most one read at a time) when a figure event arrives.
  const periodSelect = $("period-select");
  let period = /[#&]period=(quarter|year)/.exec(location.hash)?.[1] || "month";
  periodSelect.value = period;
  let periodLoad = null;
  let periodDirty = false;
  let fileBuffer = null; // events of the file that arrive while its snapshot loads
  let choice = 0;
  let snapshots = 0;

  /** The file's snapshot; the events that arrived meanwhile are applied after it, minus those
   * the snapshot already reflects (at or before its position). When a newer load started
   * meanwhile (a `reset` during the load), the newer one applies them. */
  async function loadSnapshot(id, mine) {
    snapshots += 1;
    const seq = snapshots;
    if (!fileBuffer) fileBuffer = [];
    let dashboard = null;
    try {
      // Monthly is the default: its address stays the one every version of the page used.
      dashboard = await api.get(`/files/${id}/dashboard`, { period: period === "month" ? null : period });
    } catch (error) {
      if (error.status !== 401 && mine === choice) reportError(`The dashboard could not be loaded: ${error.message}`);
    }
    if (mine !== choice || seq !== snapshots) return dashboard;
    const waiting = fileBuffer || [];
    fileBuffer = null;
    if (dashboard) {
      files.fromSnapshot(dashboard);
      cards.reset(dashboard.metrics, dashboard.currency);
      whatIf.fromSnapshot(dashboard);
      chart.reset(dashboard.charts, dashboard.currency);
      reports.setReady(dashboard.status === "processed");
    }
    for (const envelope of waiting) {
      if (!dashboard || compareIds(envelope.id, dashboard.last_event_id) > 0) applyFileEvent(envelope);
    }
    return dashboard;
  }

  async function selectFile(id, fromPosition = null) {
    choice += 1;
    const mine = choice;
    fileId = id;
    fileBuffer = null;
    history.replaceState(history.state, "", `${location.pathname}${location.search}#file=${id}${period === "month" ? "" : `&period=${period}`}`);
    files.choose(id);
    collab.choose(id);
    cards.reset([], null);
    chart.reset([], null);
    reports.choose(id, false);
    whatIf.choose(id);
    showBanner("");
    const dashboard = await loadSnapshot(id, mine);
    if (mine !== choice) return;
    const channel = `file:${id}`;
    // After an upload the stream starts before processing did, so its progress shows in full.
    const position = fromPosition || dashboard?.last_event_id || null;
    conn.start([userChannel, channel], { [channel]: position });
  }

  // -- events ------------------------------------------------------------------------------

  /** Quarterly or yearly figures: the next snapshot of the shown period, after the current
   * read if one is under way (so the last event is always reflected). */
  function refreshPeriod() {
    if (periodLoad) {
      periodDirty = true;
      return;
    }
    periodLoad = loadSnapshot(fileId, choice).finally(() => {
      periodLoad = null;
      if (periodDirty) {
        periodDirty = false;
        refreshPeriod();
      }
    });
  }

  periodSelect.addEventListener("change", () => {
    period = periodSelect.value;
    if (fileId != null) selectFile(fileId);
  });

  function applyFileEvent({ type, data }) {
    if (period !== "month" && ["metric_update", "chart_data_update", "financial_data_update"].includes(type)) {
      return refreshPeriod();
    }
    switch (type) {
      case "metric_update":
        cards.update(data);
        break;
      case "chart_data_update":
        chart.update(data);
        break;
      case "file_processing":
        files.progress(data);
        reports.setReady(data.status === "processed");
        break;
      case "financial_data_update":
        files.financial(data);
        cards.setCurrency(data.currency);
        chart.setCurrency(data.currency);
        break;
      case "parameter_update":
        files.parameter(data);
        whatIf.parameter(data);
        collab.parameter(data);
        break;
      case "report_status":
        reports.update(data);
        break;
      case "file_deleted":
        showBanner("This file was deleted: its dashboard is gone.");
        files.load();
        break;
      default:
        break;
    }
  }

  function onEvent(envelope) {
    stats.events += 1;
    stats.byType[envelope.type] = (stats.byType[envelope.type] || 0) + 1;
    if (config.recordEvents && envelope.id != null) (stats.log ||= []).push([envelope.channel, envelope.id]);
    if (envelope.channel === userChannel) {
      if (envelope.type === "job_progress") files.job(envelope.data || {});
      else if (envelope.type === "report_status") reports.update(envelope.data);
      else if (envelope.type === "preferences_updated") prefs.handle(envelope.data);
      else inbox.handle(envelope);
      // A file shared with this user joins the list at once.
      if (envelope.type === "notification" && envelope.data?.type === "collaboration_invite") sharedWithMe(envelope.data.data?.file_id);
      return;
    }
    if (envelope.channel !== `file:${fileId}`) return;
    if (envelope.type === "access_revoked") return lostAccess(envelope.data || {});
    if (collab.apply(envelope)) return; // presence: no id, no snapshot order to keep
    if (fileBuffer) fileBuffer.push(envelope);
    else applyFileEvent(envelope);
  }

  /** The server took the file's channel away: shared no longer (a deleted file's own
   * `file_deleted` came first and said so). */
  function lostAccess({ reason }) {
    if (reason === "the file was deleted") return;
    showBanner("This file is no longer shared with you: its dashboard is closed.");
    files.load();
  }

  function onSnapshotNeeded(channel) {
    if (channel === userChannel) {
      inbox.load();
      prefs.load();
    }
    else if (channel === `file:${fileId}`) loadSnapshot(fileId, choice);
  }

  async function sharedWithMe(id) {
    try {
      await files.load();
    } catch {
      return; // the next reload lists it
    }
    if (fileId == null && id) selectFile(id);
  }

  conn = new EventConnection({ token, onEvent, onSnapshotNeeded, onStatus, onExpired: expire });
  retryButton.addEventListener("click", () => conn.retryNow());
  window.addEventListener("beforeunload", () => conn.stop());
  schedule(inbox.render);
  prefs.load();

  // The file list first; while the API does not answer, the connection (user channel only)
  // shows its back-off, and the list is asked for again.
  (async function loadFiles(attempt = 0) {
    let list;
    try {
      list = await files.load();
    } catch (error) {
      if (error.status === 401) return;
      if (attempt === 0) conn.start([userChannel]);
      if (error.status !== 0) reportError(`Your files could not be loaded: ${error.message}`);
      setTimeout(() => loadFiles(attempt + 1), Math.min(30000, 1000 * 2 ** attempt));
      return;
    }
    showBanner("");
    const wanted = Number(/#file=(\d+)/.exec(location.hash)?.[1]);
    const first = list.find((f) => f.id === wanted) || list[0];
    if (first) selectFile(first.id);
    else if (attempt === 0) conn.start([userChannel]);
  })();
}
