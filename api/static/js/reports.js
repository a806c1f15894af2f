// "Generate report": format choice, live status from `report_status` events, and a download
// link once ready. The download needs the bearer header, so the link fetches the file with
// the token and hands the browser a blob.
import { el } from "./format.js";

const RANK = { queued: 0, running: 1, ready: 2, failed: 2 };
const FORMAT_LABELS = { pdf: "PDF", xlsx: "Excel", csv: "CSV" };

function filenameOf(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const star = /filename\*=UTF-8''([^;]+)/i.exec(header);
  if (star) return decodeURIComponent(star[1]);
  const plain = /filename="?([^";]+)"?/i.exec(header);
  return plain ? plain[1] : fallback;
}

export class ReportPanel {
  constructor({ api, form, format, button, list, onError }) {
    Object.assign(this, { api, form, format, button, list, onError });
    this.fileId = null;
    this.reports = new Map();
    this.nodes = new Map();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.request();
    });
  }

  /** A newly chosen file: its recent reports, and whether reports can be made yet. */
  async choose(fileId, ready) {
    this.fileId = fileId;
    this.reports.clear();
    this.nodes.clear();
    this.list.replaceChildren();
    this.setReady(ready);
    try {
      const body = await this.api.get(`/files/${fileId}/reports`);
      if (this.fileId !== fileId) return;
      for (const r of body.reports.slice(0, 5).reverse()) {
        this.update({ report_id: r.id, file_id: r.file_id, format: r.format, status: r.status, download_url: r.download_url, error: r.error });
      }
    } catch {
      // Older reports are a convenience; new ones still show.
    }
  }

  setReady(ready) {
    this.button.disabled = !ready;
    this.button.title = ready ? "" : "Reports can be made once the file is processed";
  }

  async request() {
    if (!this.fileId) return;
    const format = this.format.value;
    this.button.disabled = true;
    try {
      const accepted = await this.api.post(`/files/${this.fileId}/reports`, { format });
      this.update({ report_id: accepted.report_id, file_id: this.fileId, format, status: "queued" });
    } catch (error) {
      if (error.status !== 401) this.onError(`The report could not be requested: ${error.message}`);
    } finally {
      this.button.disabled = false;
    }
  }

  /** A `report_status` event (it comes on the file's channel and on the requester's). */
  update(data) {
    if (!data || data.file_id !== this.fileId || !data.report_id) return;
    const known = this.reports.get(data.report_id);
    if (known) {
      const older = RANK[data.status] < RANK[known.status];
      const slower = data.status === "running" && known.status === "running" && (data.percent ?? 0) < (known.percent ?? 0);
      if (older || slower) return;
    }
    // The same news comes on two channels: the second copy changes nothing (and must not
    // replace a download link under the user's pointer).
    if (known && known.status === data.status && (known.percent ?? null) === (data.percent ?? known.percent ?? null)) return;
    const report = { ...known, ...data };
    this.reports.set(data.report_id, report);
    this.#render(report);
  }

  #render(report) {
    let node = this.nodes.get(report.report_id);
    if (!node) {
      node = el("li", { class: "report", "data-report": report.report_id });
      this.nodes.set(report.report_id, node);
      this.list.prepend(node);
    }
    node.dataset.status = report.status;
    const name = `${FORMAT_LABELS[report.format] || report.format || ""} report #${report.report_id}`;
    const parts = [el("span", { class: "report-name", text: name })];
    if (report.status === "queued") parts.push(el("span", { class: "report-state", text: "queued" }));
    if (report.status === "running") {
      const percent = Math.round(Number(report.percent ?? 0));
      parts.push(
        el("span", { class: "report-state", text: `building ${percent}%` }),
        el("progress", { max: 100, value: percent, "aria-label": `${name} progress` }),
      );
    }
    if (report.status === "failed") {
      parts.push(el("span", { class: "report-state error", text: `failed${report.error || report.reason ? `: ${report.error || report.reason}` : ""}` }));
    }
    if (report.status === "ready" && report.download_url) {
      parts.push(this.#link(report, name));
    }
    node.replaceChildren(...parts);
  }

  #link(report, name) {
    const link = el("a", { href: report.download_url, class: "download", text: `Download ${name}` });
    link.addEventListener("click", async (event) => {
      if (link.dataset.ready) return; // the blob is in place: the browser downloads it
      event.preventDefault();
      link.setAttribute("aria-busy", "true");
      try {
        const response = await this.api.raw(report.download_url.replace(/^\/api\/v1/, ""));
        const blob = await response.blob();
        link.href = URL.createObjectURL(blob);
        link.download = filenameOf(response, `report-${report.report_id}.${report.format || "bin"}`);
        link.dataset.ready = "1";
        link.click();
      } catch (error) {
        if (error.status !== 401) this.onError(`The report could not be downloaded: ${error.message}`);
      } finally {
        link.removeAttribute("aria-busy");
      }
    });
    return link;
  }
}
