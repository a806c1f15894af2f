// The file picker, the upload form and the processing progress of the chosen file.
import { el } from "./format.js";

const STATUS_LABELS = { queued: "queued", processing: "processing", processed: "processed", failed: "failed" };

export class FilePanel {
  constructor({ api, select, info, processing, processingLabel, processingBar, form, input, status, onSelect, onUploaded, onError }) {
    Object.assign(this, { api, select, info, processing, processingLabel, processingBar, form, input, status, onSelect, onUploaded, onError });
    this.files = new Map();
    this.selected = null;
    this.details = {};
    this.parameters = {};
    select.addEventListener("change", () => {
      const id = Number(select.value);
      if (id) this.onSelect(id);
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.upload();
    });
  }

  async load() {
    const body = await this.api.get("/files");
    this.files = new Map(body.files.map((f) => [f.id, f]));
    this.#renderPicker();
    return body.files;
  }

  get selectedFile() {
    return this.files.get(this.selected) || null;
  }

  choose(id) {
    this.selected = id;
    this.details = {};
    this.parameters = {};
    this.processing.hidden = true;
    this.#renderPicker();
    this.#renderInfo();
  }

  /** The dashboard snapshot's view of the chosen file. */
  fromSnapshot(dashboard) {
    const file = this.files.get(dashboard.file_id);
    if (file) file.status = dashboard.status;
    this.details.currency = dashboard.currency;
    this.parameters = { ...(dashboard.parameters || {}) };
    if (dashboard.status === "queued" || dashboard.status === "processing") {
      this.progress({ status: dashboard.status, percent: 0 });
    }
    this.#renderPicker();
    this.#renderInfo();
  }

  async upload() {
    const file = this.input.files[0];
    if (!file) {
      this.status.textContent = "Choose a CSV file first.";
      this.input.focus();
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    const button = this.form.querySelector("button[type=submit]");
    button.disabled = true;
    this.status.textContent = `Uploading ${file.name}…`;
    try {
      const accepted = await this.api.upload("/files", form);
      this.status.textContent = `${file.name} uploaded; processing…`;
      this.form.reset();
      const now = new Date().toISOString();
      this.files = new Map([
        [accepted.file_id, { id: accepted.file_id, name: file.name, status: "queued", role: "owner", rows_total: 0, rows_ok: 0, rows_bad: 0, created_at: now }],
        ...this.files,
      ]);
      this.onUploaded(accepted.file_id, accepted.last_event_id);
    } catch (error) {
      this.status.textContent = error.status === 401 ? "" : `Upload refused: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  }

  /** `file_processing` of the chosen file: `{status, processed, total, percent}`. */
  progress(data) {
    const file = this.files.get(this.selected);
    if (file && data.status) file.status = data.status;
    const percent = Math.max(0, Math.min(100, Number(data.percent ?? (data.status === "processed" ? 100 : 0))));
    this.processing.hidden = false;
    this.processing.dataset.status = data.status || "";
    this.processingBar.value = percent;
    let text;
    if (data.status === "processed") text = "Processed";
    else if (data.status === "failed") text = `Processing failed${data.error ? `: ${data.error}` : ""}`;
    else if (data.status === "queued") text = "Queued for processing";
    else {
      const rows = data.total ? ` (${data.processed ?? 0} of ${data.total} rows)` : "";
      text = `Processing ${Math.round(percent)}%${rows}`;
    }
    this.processingLabel.textContent = text;
    this.processingBar.setAttribute("aria-valuetext", text);
    if (data.status === "processed" || data.status === "failed") {
      this.#refresh(this.selected);
      if (data.status === "processed") this.status.textContent = "";
    }
    this.#renderPicker();
  }

  /** `job_progress` on the user's channel: any of the user's files. */
  job(data) {
    if (data.kind !== "process_file" || !data.file_id) return;
    const file = this.files.get(data.file_id);
    const status = data.status === "running" ? "processing" : data.status;
    if (file && STATUS_LABELS[status] && file.status !== status) {
      file.status = status;
      this.#renderPicker();
    }
    if (!file && data.file_id) this.#refresh(data.file_id);
  }

  financial(data) {
    Object.assign(this.details, data);
    this.#renderInfo();
  }

  parameter(data) {
    if (data.name) this.parameters[data.name] = data.value;
    this.#renderInfo();
  }

  async #refresh(id) {
    try {
      const file = await this.api.get(`/files/${id}`);
      this.files.set(file.id, { ...this.files.get(file.id), ...file });
      this.#renderPicker();
      if (id === this.selected) this.#renderInfo();
    } catch {
      // The list stays as it was; the next event or reload corrects it.
    }
  }

  #renderPicker() {
    const select = this.select;
    const options = [];
    if (!this.files.size) options.push(el("option", { value: "", text: "No files yet: upload a CSV" }));
    for (const file of this.files.values()) {
      const shared = file.role === "member" ? `, shared by ${file.owner_id}` : "";
      options.push(
        el("option", { value: file.id, text: `${file.name} (${STATUS_LABELS[file.status] || file.status}${shared})`, selected: file.id === this.selected }),
      );
    }
    select.replaceChildren(...options);
    if (this.selected) select.value = String(this.selected);
  }

  #renderInfo() {
    const file = this.files.get(this.selected);
    if (!file) {
      this.info.textContent = "";
      return;
    }
    const parts = [];
    const ok = this.details.rows_ok ?? file.rows_ok;
    const bad = this.details.rows_bad ?? file.rows_bad;
    if (ok || bad) parts.push(`${ok} rows${bad ? `, ${bad} refused` : ""}`);
    if (this.details.currency) parts.push(this.details.currency);
    const params = Object.entries(this.parameters).map(([k, v]) => `${k} ${v}`);
    if (params.length) parts.push(params.join(", "));
    if (file.status === "failed" && file.error) parts.push(`failed: ${file.error}`);
    this.info.textContent = parts.join(" · ");
  }
}
