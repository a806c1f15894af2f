// A small SVG line chart of the file's chart series (one line each, shared axes). Like the
// cards: events change the model, the SVG is redrawn at most once per frame, never while paused.
import { comparePeriods, el, formatValue, toNumber } from "./format.js";
import { schedule, stats } from "./frame.js";
import { LiveToggle } from "./toggle.js";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#0f9d6b", "#d97706", "#be185d", "#7c3aed", "#0e7490"];
const HEIGHT = 260;
const PAD = { top: 14, right: 16, bottom: 30, left: 64 };

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** About `count` round tick values covering [min, max]. */
function ticks(min, max, count = 4) {
  if (min === max) {
    const pad = Math.abs(min) * 0.1 || 1;
    min -= pad;
    max += pad;
  }
  const raw = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
  const lo = Math.floor(min / step) * step;
  const hi = Math.ceil(max / step) * step;
  const values = [];
  for (let v = lo; v <= hi + step / 2; v += step) values.push(Number(v.toPrecision(12)));
  return values;
}

export class LineChart {
  constructor({ svg: root, legend, summary, toggle, state }) {
    this.root = root;
    this.legend = legend;
    this.summary = summary;
    this.series = new Map();
    this.currency = null;
    this.dirty = true;
    this.render = this.render.bind(this);
    this.toggle = new LiveToggle(toggle, state, "chart", () => schedule(this.render));
    new ResizeObserver(() => {
      if (this.root.clientWidth !== this.width) {
        this.dirty = true;
        schedule(this.render);
      }
    }).observe(root);
  }

  get live() {
    return this.toggle.live;
  }

  reset(charts, currency) {
    this.series = new Map((charts || []).map((c) => [c.name, c]));
    this.currency = currency || this.currency;
    this.#changed();
  }

  update(chart) {
    if (!chart || !chart.name) return;
    const known = this.series.get(chart.name);
    // An event carries at most the newest points (`truncated`): keep the older ones we have.
    if (chart.truncated && known && chart.points.length) {
      const first = chart.points[0].period;
      const older = known.points.filter((p) => comparePeriods(p.period, first) < 0);
      chart = { ...chart, points: [...older, ...chart.points] };
    }
    this.series.set(chart.name, chart);
    this.#changed();
  }

  setCurrency(currency) {
    if (!currency || currency === this.currency) return;
    this.currency = currency;
    this.#changed();
  }

  #changed() {
    this.dirty = true;
    if (this.live) schedule(this.render);
    else this.toggle.waiting(true);
  }

  render() {
    if (!this.live || !this.dirty) return;
    this.dirty = false;
    stats.renders += 1;
    this.toggle.waiting(false);
    this.width = this.root.clientWidth || 600;
    const width = this.width;
    const root = this.root;
    root.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
    root.replaceChildren();
    this.legend.replaceChildren();

    const series = [...this.series.values()].filter((s) => s.points && s.points.length);
    if (!series.length) {
      root.append(svg("text", { x: width / 2, y: HEIGHT / 2, class: "chart-empty", "text-anchor": "middle" }, "No chart data yet"));
      this.summary.textContent = "No chart data yet.";
      return;
    }
    const periods = [...new Set(series.flatMap((s) => s.points.map((p) => p.period)))].sort(comparePeriods);
    const index = new Map(periods.map((p, i) => [p, i]));
    const values = series.flatMap((s) => s.points.map((p) => toNumber(p.value)).filter((v) => v !== null));
    const yTicks = ticks(Math.min(...values), Math.max(...values));
    const [yMin, yMax] = [yTicks[0], yTicks.at(-1)];
    const plotW = width - PAD.left - PAD.right;
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    const x = (i) => PAD.left + (periods.length === 1 ? plotW / 2 : (i / (periods.length - 1)) * plotW);
    const y = (v) => PAD.top + plotH - ((v - yMin) / (yMax - yMin || 1)) * plotH;
    const unit = series[0].unit;

    const axes = svg("g", { class: "axes" });
    for (const t of yTicks) {
      axes.append(svg("line", { x1: PAD.left, x2: width - PAD.right, y1: y(t), y2: y(t), class: "grid" }));
      axes.append(
        svg("text", { x: PAD.left - 8, y: y(t) + 4, "text-anchor": "end" }, formatValue(t, unit, this.currency, { compact: true })),
      );
    }
    const labelEvery = Math.max(1, Math.ceil(periods.length / Math.max(2, Math.floor(plotW / 70))));
    periods.forEach((period, i) => {
      if (i % labelEvery !== 0 && i !== periods.length - 1) return;
      axes.append(svg("text", { x: x(i), y: HEIGHT - 8, "text-anchor": "middle" }, period));
    });
    root.append(axes);

    const summary = [];
    series.forEach((s, n) => {
      const color = COLORS[n % COLORS.length];
      let d = "";
      let pen = false;
      let last = null;
      const points = [...s.points].sort((a, b) => comparePeriods(a.period, b.period));
      for (const p of points) {
        const v = toNumber(p.value);
        if (v === null) {
          pen = false;
          continue;
        }
        const px = x(index.get(p.period)).toFixed(1);
        const py = y(v).toFixed(1);
        d += `${pen ? "L" : "M"}${px},${py}`;
        pen = true;
        last = { px, py, p };
      }
      const line = svg("g", { class: "series", "data-series": s.name });
      line.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 2.25, "stroke-linejoin": "round" }));
      if (last) line.append(svg("circle", { cx: last.px, cy: last.py, r: 3.5, fill: color }));
      root.append(line);

      const latest = last ? formatValue(last.p.value, s.unit, this.currency) : "—";
      this.legend.append(
        el(
          "li",
          { "data-series": s.name },
          el("span", { class: "swatch", "aria-hidden": "true", "data-color": n % COLORS.length }),
          el("span", { class: "legend-label", text: s.label || s.name }),
          el("span", { class: "legend-value", text: latest, "data-value": last ? last.p.value : "" }),
        ),
      );
      if (last) summary.push(`${s.label || s.name} ${latest} in ${last.p.period}`);
    });
    this.summary.textContent = `Latest: ${summary.join("; ")}.`;
  }
}
