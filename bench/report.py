"""The results table: one row per scenario, ours vs baseline vs target."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from typing import Any

from bench import storm

Cell = list[str]

TARGETS = {
    "fanout-100": ["all delivered", "p99 <= 100 ms"],
    "fanout-100-notify": ["all delivered", "p99 <= 100 ms (delivery counting on)"],
    "fanout-10": ["p99 <= 30 ms"],
    "fanout-max": [">= 150k dlv/s", "none lost", ">= 5x baseline dlv/s"],
    "capacity": ["<= 20 KB RSS/conn", "1 Redis subscriber conn", "5,000 opened <= 2 s"],
    "per-user": ["none lost", "p99 <= 20 ms"],
    "resume": ["caught up <= 200 ms"],
    "e2e-celery": ["p99 <= 50 ms"],
    "db-events": ["triggers <= 10% slower (median)", "psql UPDATE published p99 <= 50 ms"],
}


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def ms(x: Any) -> str:
    v = _num(x)
    if math.isnan(v):
        return "-"
    if v >= 10_000:
        return f"{v / 1000:.1f} s"
    if v >= 100:
        return f"{v:.0f} ms"
    if v >= 10:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def rate(x: Any) -> str:
    v = _num(x)
    if math.isnan(v):
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def ratio(a: Any, b: Any) -> str:
    x, y = _num(a), _num(b)
    if math.isnan(x) or math.isnan(y) or y <= 0:
        return "-"
    r = x / y
    return f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


def _lat(res: dict[str, Any]) -> dict[str, Any]:
    lat: dict[str, Any] = res.get("latency_ms", {})
    return lat


def _failed(res: dict[str, Any] | None) -> Cell | None:
    if res is None:
        return ["-"]
    if "skipped" in res:
        return ["n/a", f"({res['skipped']})"]
    if "error" in res:
        return ["ERROR:", *textwrap.wrap(str(res["error"]), 30)[:3]]
    return None


def _stream_cell(res: dict[str, Any]) -> Cell:
    lat = _lat(res)
    bound = res.get("load_cpu_saturated")
    lines = [
        f"{'>= ' if bound else ''}{rate(res.get('deliveries_per_s'))} dlv/s"
        + (" (client-bound)" if bound else ""),
        f"p50 {ms(lat.get('p50'))}, p99 {ms(lat.get('p99'))}",
        f"max {ms(lat.get('max'))}",
        f"lost {res.get('lost', '-')}, dup {res.get('duplicates', '-')}",
    ]
    if res.get("open", {}).get("failed"):
        lines.append(f"{res['open']['failed']} streams failed")
    if res.get("disconnects"):
        lines.append(f"{res['disconnects']} disconnected")
    return lines


def _stream_ratio(ours: dict[str, Any], base: dict[str, Any]) -> Cell:
    return [
        f"dlv/s {ratio(ours.get('deliveries_per_s'), base.get('deliveries_per_s'))}",
        f"p99 {ratio(_lat(base).get('p99'), _lat(ours).get('p99'))} lower",
    ]


def _capacity_cell(res: dict[str, Any]) -> Cell:
    redis = res.get("redis", {})
    lines = [
        f"{res.get('opened_ok', 0) + 1:,} conns: {_num(res.get('rss_per_conn_kb')):.1f} KB/conn",
        f"{res.get('timed_count', 0):,} opened in {_num(res.get('timed_open_s')):.2f} s",
        f"Redis conns: {redis.get('subscriber_connections', '-')} subscriber,",
        f"  {redis.get('total_connections', '-')} in all",
    ]
    if res.get("failed"):
        lines.append(f"{res['failed']} failed")
    return lines


def _capacity_ratio(ours: dict[str, Any], base: dict[str, Any]) -> Cell:
    return [
        f"RSS/conn {ratio(base.get('rss_per_conn_kb'), ours.get('rss_per_conn_kb'))} less",
        f"open {ratio(base.get('timed_open_s'), ours.get('timed_open_s'))} faster",
        "Redis conns "
        + ratio(
            base.get("redis", {}).get("subscriber_connections"),
            ours.get("redis", {}).get("subscriber_connections"),
        )
        + " fewer",
    ]


def _resume_cell(res: dict[str, Any]) -> Cell:
    trials = res.get("trials", [])
    got = min((t.get("received", 0) for t in trials), default=0)
    exp = max((t.get("expected", 0) for t in trials), default=0)
    return [
        f"median {ms(res.get('caught_up_ms_median'))}",
        f"max {ms(res.get('caught_up_ms_max'))} ({len(trials)} runs)",
        f"{got}/{exp} replayed",
        f"lost {res.get('lost', '-')}, dup {res.get('duplicates', '-')}",
    ]


def _e2e_cell(res: dict[str, Any]) -> Cell:
    lat = _lat(res)
    return [
        f"p50 {ms(lat.get('p50'))}, p99 {ms(lat.get('p99'))}",
        f"max {ms(lat.get('max'))}",
        f"lost {res.get('lost', '-')}, dup {res.get('duplicates', '-')}",
    ]


def _db_events_cell(res: dict[str, Any]) -> Cell:
    """Rows/s with/without the triggers, and the slowdown: the median of the paired rounds'
    (their range in brackets)."""
    cells = []
    for kind in ("insert", "update"):
        spread = ""
        if f"{kind}_slowdown_min_pct" in res:
            spread = f" [{res[f'{kind}_slowdown_min_pct']}..{res[f'{kind}_slowdown_max_pct']}]"
        cells.append(
            f"{kind} {res.get(f'{kind}_rows_s_with')}/{res.get(f'{kind}_rows_s_without')} rows/s "
            f"({res.get(f'{kind}_slowdown_pct')}% slower{spread})"
        )
    for kind in ("insert", "update"):  # every statement size: the slowdown, the added CPU
        by_size = [
            f"{size}: {r.get(f'{kind}_slowdown_pct')}%/{r.get(f'{kind}_extra_us_per_statement')}us"
            f" (floor {r.get(f'{kind}_floor_slowdown_pct')}%)"
            for size, r in res.get("sizes", {}).items()
        ]
        if by_size:
            cells.append(f"{kind} by statement rows (slower/CPU added): " + ", ".join(by_size))
    cells.append(
        f"UPDATE->published p50 {ms(res.get('latency_p50_ms'))}, "
        f"p99 {ms(res.get('latency_p99_ms'))}"
    )
    return cells


# The delivery rows with Nchan beside us: (scenario, what, figure, target).
NCHAN_ROWS = (
    ("fanout-10", "{subs:,} subs, 10 ev/s: p99", "p99", "as Nchan"),
    ("fanout-100", "{subs:,} subs, 100 ev/s: p99", "p99", "<= 10 ms"),
    ("fanout-max", "{subs:,} subs, max rate: dlv/s", "dlv", ">= Nchan"),
    ("per-user", "{peruser_users:,} users x {peruser_events} ev: p99", "p99", "as Nchan"),
)


def _figure(res: dict[str, Any], what: str) -> float:
    return _num(res.get("deliveries_per_s")) if what == "dlv" else _num(_lat(res).get("p99"))


def _shown(res: dict[str, Any], what: str) -> str:
    text = f"{rate(res.get('deliveries_per_s'))}/s" if what == "dlv" else ms(_lat(res).get("p99"))
    if res.get("lost") or res.get("duplicates"):
        text += f" (lost {res.get('lost')}, dup {res.get('duplicates')})"
    if what == "dlv" and res.get("load_cpu_saturated"):
        text = ">= " + text + " (client-bound)"
    return text


def nchan_table(doc: dict[str, Any]) -> str:
    """Ours beside Nchan and the uvicorn floor on the delivery rows (same clients, publisher
    rate and pinning); the ratios are ours/peer, so above 1.0x means slower for latencies and
    faster for dlv/s."""
    rows: list[list[Cell]] = []
    notes: set[str] = set()
    for name, label, what, target in NCHAN_ROWS:
        row = doc["scenarios"].get(name) or {}
        ours = row.get("ours")
        if not ours or (row.get("nchan") is None and row.get("floor") is None):
            continue
        mine = _failed(ours)
        cells: list[Cell] = [
            [label.format(**doc["params"])],
            mine[:1] if mine else [_shown(ours, what)],
        ]
        ratios: list[Cell] = []
        for key, peer_name in (("nchan", "Nchan"), ("floor", "uvicorn floor")):
            peer: dict[str, Any] | None = row.get(key)
            bad = _failed(peer)
            if peer is None or bad is not None:
                if peer is not None and bad is not None:
                    notes.add(f"{peer_name} not measured: {' '.join(bad[1:] or bad)}")
                cells.append(["not measured"])
                ratios.append(["-"])
                continue
            cells.append([_shown(peer, what)])
            ratios.append(["-"] if mine else [ratio(_figure(ours, what), _figure(peer, what))])
        rows.append([*cells, *ratios, [target]])
    if not rows:
        return ""
    table = _table(
        ["Beside Nchan (same harness)", "Ours", "Nchan", "uvicorn floor", "Ours/Nchan",
         "Ours/floor", "Target"],
        rows,
    )  # fmt: skip
    floor_note = (
        "uvicorn floor = bench/floor_app.py: one Redis pattern subscription; each event framed "
        "once; what is read together written together, one uvicorn send per stream; nothing "
        "of ours"
    )
    return "\n".join([table, floor_note, *sorted(notes)])


def verdict(name: str, ours: dict[str, Any] | None, base: dict[str, Any] | None) -> Cell:
    if not ours or "error" in ours or "skipped" in ours:
        return ["-"]
    fails: list[str] = []
    lat = _lat(ours)
    p99 = _num(lat.get("p99"))
    lost = ours.get("lost", 0)

    def check(ok: bool, what: str) -> None:
        if not ok:
            fails.append(what)

    if name in (
        "fanout-100",
        "fanout-100-notify",
        "fanout-10",
        "fanout-max",
        "per-user",
        "e2e-celery",
    ):
        check(not ours.get("open_failed"), "failed opens")
    if name in ("fanout-100", "fanout-100-notify"):
        check(lost == 0 and ours.get("received") == ours.get("expected"), "lost")
        check(p99 <= 100, "p99")
    elif name == "fanout-10":
        check(p99 <= 30, "p99")
        check(lost == 0, "lost")
    elif name == "fanout-max":
        check(_num(ours.get("deliveries_per_s")) >= 150_000, "dlv/s")
        check(lost == 0, "lost")
        if base and "deliveries_per_s" in base:
            check(
                _num(ours.get("deliveries_per_s")) >= 5 * _num(base.get("deliveries_per_s")),
                "<5x base",
            )
    elif name == "capacity":
        check(_num(ours.get("rss_per_conn_kb")) <= 20, "RSS")
        check(ours.get("redis", {}).get("subscriber_connections") == 1, "Redis conns")
        check(_num(ours.get("timed_open_s")) <= 2, "open time")
        check(not ours.get("failed"), "failed opens")
    elif name == "per-user":
        check(lost == 0, "lost")
        check(p99 <= 20, "p99")
    elif name == "resume":
        check(_num(ours.get("caught_up_ms_max")) <= 200, "time")
        check(lost == 0, "lost")
    elif name == "e2e-celery":
        check(p99 <= 50, "p99")
        check(lost == 0, "lost")
    elif name == "db-events":
        check(_num(ours.get("insert_slowdown_pct")) <= 10, "insert cost")
        check(_num(ours.get("update_slowdown_pct")) <= 10, "update cost")
        check(_num(ours.get("latency_p99_ms")) <= 50, "latency")
    return ["PASS"] if not fails else ["FAIL:", *fails]


def describe(name: str, params: dict[str, Any]) -> Cell:
    p = params
    if name == "fanout-100":
        return [name, f"{p['subs']:,} subs, 1 chan", f"{p['f100_events']:,} ev @ 100/s"]
    if name == "fanout-100-notify":
        return [name, f"{p['subs']:,} subs, 1 chan", f"{p['f100_events']:,} notifications @ 100/s"]
    if name == "fanout-10":
        return [name, f"{p['subs']:,} subs, 1 chan", f"{p['f10_events']:,} ev @ 10/s"]
    if name == "fanout-max":
        return [name, f"{p['subs']:,} subs, 1 chan", f"{p['fmax_events']:,} ev, max rate"]
    if name == "capacity":
        return [
            name,
            f"{p['cap_conns']:,} idle streams",
            f"(baseline {p['cap_baseline']:,})",
            f"timed: first {p['cap_timed']:,}",
        ]
    if name == "per-user":
        return [
            name,
            f"{p['peruser_users']:,} users/chans",
            f"{p['peruser_events']} ev each @ {p['peruser_rate']:.0f}/s",
        ]
    if name == "resume":
        return [name, f"Last-Event-ID, {p['resume_events']:,}", "ev in history"]
    if name == "e2e-celery":
        return [
            name,
            f"{p['e2e_subs']} subs, {p['e2e_events']} ev",
            f"@ {p['e2e_rate']:.0f}/s from a task",
        ]
    if name == "db-events":
        return [name, "financial rows by psycopg", "with/without triggers"]
    return [name]


CELLS: dict[str, Callable[[dict[str, Any]], Cell]] = {
    "fanout-100": _stream_cell,
    "fanout-100-notify": _stream_cell,
    "fanout-10": _stream_cell,
    "fanout-max": _stream_cell,
    "per-user": _stream_cell,
    "capacity": _capacity_cell,
    "resume": _resume_cell,
    "e2e-celery": _e2e_cell,
    "db-events": _db_events_cell,
}


def brief(name: str, res: dict[str, Any]) -> str:
    """One-line summary for the progress log."""
    if "error" in res or "skipped" in res:
        return str(res.get("error") or res.get("skipped"))
    if name not in CELLS:
        return storm.brief(res)
    return "; ".join(CELLS[name](res))


def _table(headers: list[str], rows: list[list[Cell]]) -> str:
    ncol = len(headers)
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], *(len(x) for x in cell))
    sep = "-+-".join("-" * w for w in widths)
    out = [" | ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip(), sep]
    for row in rows:
        height = max(len(c) for c in row)
        for k in range(height):
            line = " | ".join(
                (row[i][k] if k < len(row[i]) else "").ljust(widths[i]) for i in range(ncol)
            )
            out.append(line.rstrip())
        out.append(sep)
    return "\n".join(out)


def render(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    params = doc["params"]
    head = [
        "FinVision Realtime SSE benchmark"
        + (
            " (QUICK mode: smaller loads, targets are for the full run)"
            if m["mode"] == "quick"
            else ""
        ),
        f"date {m['date']}; git {m['git_head']}; run took {m.get('duration_s', '?')} s",
        f"CPU {m['cpu_model']}, {m['cores']} cores; Python {m['python']}; Redis {m['redis']}; "
        f"kernel {m['kernel']}",
        f"pinning: {m['pinning']}; publisher: {m['publisher']}; our server: {m['ours']}",
        "latency = receive time - publisher's time.time_ns() stamp in the event; "
        "dlv/s = events received by all clients / (last receipt - first publish)",
    ]
    noisy = [
        f"{name}/{t} {res['foreign_cpu_pct']:.0f}%"
        for name, row in doc["scenarios"].items()
        for t, res in row.items()
        if isinstance(res, dict) and res.get("foreign_cpu_pct", 0) > 5
    ]
    if noisy:
        head.append(
            "WARNING: other processes used the CPUs meanwhile (share of all cores): "
            + ", ".join(noisy)
        )
    if doc.get("interrupted"):
        head.append("INTERRUPTED: partial results")
    rows: list[list[Cell]] = []
    for name, row in doc["scenarios"].items():
        if name not in CELLS:  # the distinct-user scenarios have a table of their own
            continue
        ours = row.get("ours")
        base = row.get("baseline")
        cell_fn = CELLS[name]
        ours_cell = _failed(ours) or cell_fn(ours or {})
        base_cell = _failed(base) or cell_fn(base or {})
        if _failed(ours) is None and _failed(base) is None and ours and base:
            rat = (
                _capacity_ratio(ours, base)
                if name == "capacity"
                else _stream_ratio(ours, base)
                if name.startswith("fanout")
                else ["-"]
            )
        else:
            rat = ["-"]
        rows.append(
            [
                describe(name, params),
                ours_cell,
                base_cell,
                rat,
                TARGETS[name],
                verdict(name, ours, base),
            ]
        )
    table = _table(
        ["Scenario", "Ours", "Baseline (naive)", "Ours vs baseline", "Target", "Verdict"], rows
    )
    parts = [table] if rows else []
    beside = nchan_table(doc)
    if beside:
        parts.append(beside)
    extra = storm.render(doc)
    if extra:
        parts.append(extra)
    return "\n".join(head) + "\n\n" + "\n\n".join(parts)
