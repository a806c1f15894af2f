// Numbers as a finance user reads them, in the browser's locale. Values arrive as decimal
// strings; display needs no more precision than a double carries.
const cache = new Map();

function formatter(key, options) {
  let f = cache.get(key);
  if (!f) {
    try {
      f = new Intl.NumberFormat(undefined, options);
    } catch {
      f = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
    }
    cache.set(key, f);
  }
  return f;
}

export function toNumber(value) {
  if (value === null || value === undefined || value === "") return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

export function formatMoney(value, currency, { compact = false } = {}) {
  const n = toNumber(value);
  if (n === null) return "—";
  const options = compact
    ? { notation: "compact", maximumFractionDigits: 1 }
    : Math.abs(n) >= 1000
      ? { maximumFractionDigits: 0 }
      : { minimumFractionDigits: 2, maximumFractionDigits: 2 };
  if (currency) Object.assign(options, { style: "currency", currency });
  return formatter(`m:${currency}:${compact}:${options.maximumFractionDigits}`, options).format(n);
}

export function formatRatio(value) {
  const n = toNumber(value);
  if (n === null) return "—";
  return formatter("r", { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(n);
}

export function formatValue(value, unit, currency, options) {
  return unit === "ratio" ? formatRatio(value) : formatMoney(value, currency, options);
}

/** A relative change ("0.0265") as "+2.7%", with its direction. */
export function formatChange(value) {
  const n = toNumber(value);
  if (n === null) return { text: "no earlier period", direction: "flat" };
  const f = formatter("c", {
    style: "percent",
    minimumFractionDigits: 1,
    maximumFractionDigits: 1,
    signDisplay: "exceptZero",
  });
  return { text: f.format(n), direction: n > 0 ? "up" : n < 0 ? "down" : "flat" };
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function formatAgo(iso) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "";
  const seconds = Math.round((then - Date.now()) / 1000);
  const steps = [
    [60, "second"],
    [60, "minute"],
    [24, "hour"],
    [7, "day"],
  ];
  let amount = seconds;
  for (const [size, unit] of steps) {
    if (Math.abs(amount) < size) return relative.format(unit === "second" && Math.abs(amount) < 10 ? 0 : amount, unit);
    amount = Math.round(amount / size);
  }
  return new Date(then).toLocaleDateString();
}

/** Periods sort as the server sorts them: year, first month, length ("2026-01" < "2026-Q1"). */
export function periodKey(period) {
  const month = /^(\d{4})-(\d{2})$/.exec(period);
  if (month) return [Number(month[1]), Number(month[2]), 1];
  const quarter = /^(\d{4})-Q([1-4])$/.exec(period);
  if (quarter) return [Number(quarter[1]), Number(quarter[2]) * 3 - 2, 3];
  return [Number.MAX_SAFE_INTEGER, 0, 0];
}

export function comparePeriods(a, b) {
  const ka = periodKey(a);
  const kb = periodKey(b);
  for (let i = 0; i < 3; i += 1) if (ka[i] !== kb[i]) return ka[i] - kb[i];
  return a < b ? -1 : a > b ? 1 : 0;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}
