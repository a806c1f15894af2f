// Metric cards: value, change against the previous period, and a "just updated" mark that
// fades. Events update the model at any rate; the DOM follows once per frame, and not at all
// while paused (on resume it jumps to the current state).
import { el, formatChange, formatValue } from "./format.js";
import { schedule, stats } from "./frame.js";
import { LiveToggle } from "./toggle.js";

const FADE_MS = 2500;

export class MetricCards {
  constructor({ root, empty, toggle, state }) {
    this.root = root;
    this.empty = empty;
    this.metrics = new Map();
    this.nodes = new Map();
    this.dirty = new Set();
    this.marks = new Set();
    this.rebuild = false;
    this.currency = null;
    this.parameters = {};
    this.render = this.render.bind(this);
    this.toggle = new LiveToggle(toggle, state, "cards", () => schedule(this.render));
  }

  get live() {
    return this.toggle.live;
  }

  /** A new snapshot: shown at once (if live), without marks. */
  reset(metrics, currency) {
    this.metrics = new Map((metrics || []).map((m) => [m.name, m]));
    this.currency = currency || null;
    this.dirty = new Set(this.metrics.keys());
    this.marks.clear();
    this.rebuild = true;
    this.#changed();
  }

  update(metric) {
    if (!metric || !metric.name) return;
    if (!this.metrics.has(metric.name)) this.rebuild = true;
    this.metrics.set(metric.name, metric);
    this.dirty.add(metric.name);
    this.marks.add(metric.name);
    this.#changed();
  }

  setCurrency(currency) {
    if (!currency || currency === this.currency) return;
    this.currency = currency;
    for (const name of this.metrics.keys()) this.dirty.add(name);
    this.#changed();
  }

  /** The file's what-if parameters: the forecast card says when it lacks its growth rate. */
  setParameters(parameters) {
    this.parameters = parameters || {};
    if (this.metrics.has("forecast_revenue")) {
      this.dirty.add("forecast_revenue");
      this.#changed();
    }
  }

  #changed() {
    if (this.live) schedule(this.render);
    else this.toggle.waiting(true);
  }

  render() {
    if (!this.live) return;
    stats.renders += 1;
    this.toggle.waiting(false);
    if (this.rebuild) this.#rebuild();
    for (const name of this.dirty) this.#fill(name);
    const now = document.timeline ? document.timeline.currentTime : 0;
    for (const name of this.marks) this.#mark(name, now);
    this.dirty.clear();
    this.marks.clear();
    this.empty.hidden = this.metrics.size > 0;
  }

  #rebuild() {
    this.rebuild = false;
    for (const [name, node] of this.nodes) {
      if (!this.metrics.has(name)) {
        node.root.remove();
        this.nodes.delete(name);
      }
    }
    for (const name of this.metrics.keys()) {
      let node = this.nodes.get(name);
      if (!node) {
        node = this.#create(name);
        this.nodes.set(name, node);
        this.dirty.add(name);
      }
      this.root.append(node.root);
    }
  }

  #create(name) {
    const id = `metric-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    const label = el("h3", { id: `${id}-label`, class: "card-label" });
    const value = el("p", { class: "card-value" });
    const change = el("p", { class: "card-change" });
    const period = el("p", { class: "card-period" });
    const mark = el("span", { class: "card-mark", "aria-hidden": "true", text: "just updated" });
    const root = el(
      "article",
      { class: "card", "data-metric": name, "aria-labelledby": `${id}-label` },
      label,
      value,
      change,
      el("div", { class: "card-foot" }, period, mark),
    );
    return { root, label, value, change, period, mark, animation: null };
  }

  #fill(name) {
    const metric = this.metrics.get(name);
    const node = this.nodes.get(name);
    if (!metric || !node) return;
    node.label.textContent = metric.label || name;
    node.value.textContent = formatValue(metric.value, metric.unit, this.currency);
    node.value.dataset.value = metric.value ?? "";
    const change = formatChange(metric.change);
    node.change.textContent = metric.change == null ? change.text : `${change.text} vs previous`;
    node.change.dataset.direction = change.direction;
    if (name === "forecast_revenue" && metric.value == null) {
      // No value: the forecast needs a growth rate (or, rarely, a revenue to grow from).
      node.change.textContent =
        this.parameters.growth_rate == null
          ? "No growth rate set: set one under What-if"
          : "No revenue to forecast from";
    }
    node.period.textContent = metric.period ? `Period ${metric.period}` : "";
  }

  #mark(name, now) {
    const node = this.nodes.get(name);
    if (!node) return;
    // The Web Animations API restarts the fade without a style flush per card.
    if (node.animation) node.animation.cancel();
    node.root.dataset.updated = String(now);
    node.animation = node.mark.animate([{ opacity: 1 }, { opacity: 1, offset: 0.3 }, { opacity: 0 }], {
      duration: FADE_MS,
      easing: "ease-out",
      fill: "forwards",
    });
  }
}
