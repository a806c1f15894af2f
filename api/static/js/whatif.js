// What-if parameters on the page: the file's tax rate and growth rate, set with
// `PUT /files/{id}/parameters/{name}` (owner and members alike). The recomputed cards arrive on
// the file's stream like every other change, so this module only sends and shows the values;
// a `parameter_update` from anyone (another tab, another member) refreshes the fields.
const FIELDS = ["tax_rate", "growth_rate"];

export class WhatIfPanel {
  constructor({ api, form, status, onParameters, onError }) {
    this.api = api;
    this.form = form;
    this.status = status;
    this.onParameters = onParameters;
    this.onError = onError;
    this.fileId = null;
    this.parameters = {};
    this.inputs = Object.fromEntries(FIELDS.map((name) => [name, form.elements.namedItem(name)]));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#submit();
    });
    this.#enable(false);
  }

  choose(fileId) {
    this.fileId = fileId;
    this.parameters = {};
    this.status.textContent = "";
    this.#show();
    this.#enable(fileId !== null);
  }

  fromSnapshot(dashboard) {
    this.parameters = { ...(dashboard.parameters || {}) };
    this.#show();
  }

  /** A `parameter_update` event: someone set one. */
  parameter(data) {
    if (!data?.name) return;
    this.parameters[data.name] = data.value;
    this.#show(data.name);
  }

  #show(only = null) {
    for (const name of FIELDS) {
      const input = this.inputs[name];
      if (!input || (only && name !== only)) continue;
      // Never overwrite what the person is typing.
      if (document.activeElement !== input) input.value = this.parameters[name] ?? "";
    }
    this.onParameters?.({ ...this.parameters });
  }

  #enable(on) {
    for (const control of this.form.querySelectorAll("input, button")) control.disabled = !on;
  }

  async #submit() {
    if (this.fileId === null) return;
    const changed = FIELDS.filter((name) => {
      const text = this.inputs[name].value.trim();
      return text !== "" && text !== String(this.parameters[name] ?? "");
    });
    if (!changed.length) {
      this.status.textContent = "Nothing to change.";
      return;
    }
    this.status.textContent = "Saving…";
    for (const name of changed) {
      try {
        const stored = await this.api.put(`/files/${this.fileId}/parameters/${name}`, {
          value: this.inputs[name].value.trim(),
        });
        this.parameters[name] = stored.value;
      } catch (error) {
        if (error.status === 401) return;
        this.status.textContent = `${name.replace("_", " ")}: ${error.message}`;
        return;
      }
    }
    this.status.textContent = "Saved: the cards update live.";
    this.#show();
  }
}
