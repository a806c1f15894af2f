"""Orchestrator: starts Redis and the servers, runs the scenarios, prints and saves the table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench import nchan, report, storm
from bench.clients import ClientGroup
from bench.common import STREAM_PATH, cpu_seconds
from bench.procs import (
    LOAD_CPU,
    PYTHON,
    REGISTRY,
    REPO,
    SERVER_CPU,
    UVICORN_FLAGS,
    Pinning,
    Proc,
    Worker,
    free_port,
    raise_nofile,
    spawn,
    start_redis,
    tree_cpu,
    wait_http_ok,
)

SCENARIOS = (
    "fanout-100",
    # fanout-100 again with `notification` events, which the hub counts (delivery metrics):
    # the two rows of one run give the counting's cost.
    "fanout-100-notify",
    "fanout-10",
    "fanout-max",
    "capacity",
    "per-user",
    "resume",
    "e2e-celery",
    "db-events",
    # bench/cluster_bench.py: one Redis against a 3-shard cluster and --workers 2; presence.
    "cluster-fanout",
    "presence-capacity",
    "presence-storm",
    *storm.SCENARIOS,
)
BASELINE_SCENARIOS = {"fanout-100", "fanout-10", "fanout-max", "capacity"}
# Nchan (bench/nchan.py) beside us on the delivery rows, same harness, same pinning.
NCHAN_SCENARIOS = {"fanout-100", "fanout-10", "fanout-max", "per-user"}
RESULTS = Path(__file__).resolve().parent / "results"
VENV_BIN = Path(PYTHON).parent


@dataclass
class Params:
    subs: int = 1000
    f100_events: int = 2000
    f10_events: int = 300
    fmax_events: int = 2000
    fmax_concurrency: int = 32
    cap_conns: int = 10_000
    cap_timed: int = 5000
    cap_baseline: int = 5000
    cap_concurrency: int = 500
    peruser_users: int = 2000
    peruser_events: int = 5
    peruser_rate: float = 1000.0
    resume_events: int = 1000
    resume_trials: int = 5
    e2e_subs: int = 100
    e2e_events: int = 500
    e2e_rate: float = 100.0
    drain_idle_s: float = 5.0
    drain_max_s: float = 60.0


FULL = Params()
QUICK = Params(
    subs=200,
    f100_events=300,
    f10_events=50,
    fmax_events=500,
    cap_conns=2000,
    cap_timed=1000,
    cap_baseline=1000,
    peruser_users=300,
    resume_trials=2,
    e2e_subs=50,
    e2e_events=100,
    drain_idle_s=3.0,
    drain_max_s=20.0,
)


class Skip(Exception):
    """A scenario that cannot run for this target (e.g. no resume in the baseline)."""


class Target:
    """One server implementation: a fresh process per scenario, pinned to the server CPU."""

    def __init__(self, bench: Bench, name: str) -> None:
        self.bench = bench
        self.name = name
        self.port = 0
        self.proc: Proc | None = None
        self._nchan_dir: Path | None = None

    @property
    def stream_path(self) -> str:
        """The path a stream of ``{user}`` (channel ``user:{user}``) is read from."""
        return "/sub/user_{user}" if self.name == "nchan" else STREAM_PATH

    def argv(self, port: int) -> list[str]:
        if self.name == "ours":
            return [str(VENV_BIN / "finrt"), "api", "--host", "127.0.0.1", "--port", str(port)]
        return [
            PYTHON,
            "-m",
            "uvicorn",
            "bench.floor_app:app" if self.name == "floor" else "bench.baseline_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *UVICORN_FLAGS,
        ]

    async def start(self) -> Proc:
        await self.stop()
        self.bench.flush_redis()
        if self.name == "nchan":
            self.proc, self.port, self._nchan_dir = await nchan.start(self.bench)
            return self.proc
        self.port = free_port()
        self.proc = spawn(
            f"server-{self.name}",
            self.argv(self.port),
            # The floor delivers only on the delivery rows (bench/floor_app.py).
            env={**self.bench.env, "BENCH_FLOOR_DELIVER": "1"}
            if self.name == "floor"
            else self.bench.env,
            cpu=SERVER_CPU,
            pinning=self.bench.pinning,
            log_dir=self.bench.log_dir,
        )
        await wait_http_ok(self.port, "/healthz", self.proc, timeout=60)
        await asyncio.sleep(0.3)
        return self.proc

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[tuple[Proc, contextlib.AsyncExitStack]]:
        """The server started, and a stack for what a scenario opens against it (clients,
        publishers, workers: each pushes its close): on the way out, failed or not, they are
        closed, last opened first, and then the server stops."""
        proc = await self.start()
        async with contextlib.AsyncExitStack() as closing:
            closing.push_async_callback(self.stop)
            yield proc, closing

    async def stop(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            await asyncio.to_thread(proc.stop)
        if self._nchan_dir is not None:
            shutil.rmtree(self._nchan_dir, ignore_errors=True)
            self._nchan_dir = None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.p = QUICK if args.quick else FULL
        self.pinning = Pinning(not args.no_pin)
        self.secret = secrets.token_urlsafe(32)
        self.tmp = Path(tempfile.mkdtemp(prefix="finrt-bench-"))
        self.log_dir = RESULTS / "tmp" / "logs"
        self.redis_proc: Proc | None = None
        # The processes counted as Redis in the CPU figures, when not redis_proc (a cluster's).
        self.redis_cpu_pids: list[int] | None = None
        self.redis_port = 0
        self.env: dict[str, str] = {}
        self.pub_mode = "raw"
        self.ours_ok = False
        self.ours_note = ""
        self.results: dict[str, dict[str, Any]] = {}
        self.redis_version = ""

    # -- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pinning.pin_self(LOAD_CPU)
        self.redis_proc, self.redis_port = start_redis(self.pinning, self.log_dir, self.tmp)
        r = self.redis()
        self.redis_version = str(r.info("server").get("redis_version", ""))
        r.close()
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("FINRT_"):
                del env[k]
        env.update(
            {
                "FINRT_ENV": "production",
                "FINRT_JWT_SECRET": self.secret,
                "FINRT_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "FINRT_DATABASE_URL": f"sqlite:///{self.tmp}/bench.db",
                "FINRT_MAX_STREAMS_PER_USER": "1000000",
                "FINRT_CLIENT_BUFFER": "100000",
                "FINRT_REDIS_PREFIX": "bench",
                "FINRT_LOG_LEVEL": "WARNING",
                "BENCH_CELERY_BROKER": f"redis://127.0.0.1:{self.redis_port}/1",
                "PYTHONPATH": str(REPO),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env = env
        self.ours_ok, self.ours_note = self.detect_ours()
        want = self.args.publisher
        if want == "auto":
            self.pub_mode = "streams" if self.ours_ok else "raw"
        else:
            self.pub_mode = want

    def detect_ours(self) -> tuple[bool, str]:
        if self.args.target == "baseline":
            return False, "skipped (--target baseline)"
        probe = subprocess.run(
            [
                PYTHON,
                "-c",
                "import streams, sys; sys.exit(0 if hasattr(streams, 'apublish') else 3)",
            ],
            env=self.env,
            cwd=str(REPO),
            capture_output=True,
            timeout=60,
        )
        if probe.returncode != 0:
            return False, "streams.apublish not available (streams core not built yet)"
        finrt = VENV_BIN / "finrt"
        if not finrt.exists():
            return False, f"{finrt} missing"
        mig = subprocess.run(
            [str(finrt), "migrate"],
            env=self.env,
            cwd=str(REPO),
            capture_output=True,
            timeout=120,
        )
        (self.log_dir / "migrate.log").write_bytes(mig.stdout + mig.stderr)
        if mig.returncode != 0:
            tail = (mig.stdout + mig.stderr).decode(errors="replace")[-400:]
            return False, f"`finrt migrate` failed: {tail}"
        return True, ""

    def redis(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.redis_port, db=db, socket_timeout=10)

    def flush_redis(self) -> None:
        r = self.redis()
        r.flushall()
        r.close()

    def teardown(self) -> None:
        REGISTRY.stop_all()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- workers ---------------------------------------------------------------------------

    async def client(self, name: str, port: int, path: str = STREAM_PATH) -> ClientGroup:
        spec = {"host": "127.0.0.1", "port": port, "path": path, "secret": self.secret}
        workers: list[Worker] = []
        try:
            for k in range(max(1, self.args.clients)):
                workers.append(
                    await Worker.start(
                        f"client-{name}-{k}",
                        "bench.loadclient",
                        spec,
                        env=self.env,
                        cpu=LOAD_CPU,
                        pinning=self.pinning,
                        log_dir=self.log_dir,
                    )
                )
        except BaseException:
            for w in workers:
                w.kill()
            raise
        return ClientGroup(workers, self.log_dir.parent / "dumps")

    async def publisher(self, name: str, **spec: Any) -> Worker:
        full = {
            "mode": self.pub_mode,  # spec may name another (Nchan's)
            "redis_url": self.env["FINRT_REDIS_URL"],
            "prefix": self.env["FINRT_REDIS_PREFIX"],
            **spec,
        }
        return await Worker.start(
            f"publisher-{name}",
            "bench.publisher",
            full,
            env=self.env,
            cpu=LOAD_CPU,
            pinning=self.pinning,
            log_dir=self.log_dir,
        )

    def redis_client_counts(self) -> dict[str, int]:
        r = self.redis()
        try:
            clients = r.client_list()
        finally:
            r.close()
        subs = 0
        total = 0
        for c in clients:
            if c.get("cmd") in ("client|list", "client"):
                continue
            total += 1
            cmd = c.get("cmd", "")
            if cmd in ("subscribe", "ssubscribe", "psubscribe") or any(
                int(c.get(k, 0) or 0) > 0 for k in ("sub", "psub", "ssub")
            ):
                subs += 1
        return {"subscriber_connections": subs, "total_connections": total}

    # -- driver ----------------------------------------------------------------------------

    async def run(self) -> None:
        from bench import delivery, fanout
        from bench.cluster_bench import scenarios as cluster_scenarios

        selected = self.args.only or list(SCENARIOS)
        targets: list[Target] = []
        if self.ours_ok and self.args.target in ("both", "ours"):
            targets.append(Target(self, "ours"))
        if self.args.target in ("both", "baseline"):
            targets.append(Target(self, "baseline"))
        if self.ours_ok and self.args.target in ("both", "ours"):
            targets.append(Target(self, "floor"))
        nchan_note = ""
        if self.args.target in ("both", "ours") and not self.args.no_nchan:
            ok, nchan_note = await asyncio.to_thread(nchan.available)
            if ok:
                targets.append(Target(self, "nchan"))
        fns: dict[str, Callable[[Target], Awaitable[dict[str, Any]]]] = {
            **fanout.scenarios(self),
            **delivery.scenarios(self),
            **cluster_scenarios(self),
            **storm.scenarios(self),
        }
        for name in SCENARIOS:
            if name not in selected:
                continue
            row: dict[str, Any] = {}
            self.results[name] = row
            if nchan_note and name in NCHAN_SCENARIOS:
                row["nchan"] = {"skipped": nchan_note}
            for target in targets:
                if target.name == "baseline" and name not in BASELINE_SCENARIOS:
                    continue
                if target.name in ("nchan", "floor") and name not in NCHAN_SCENARIOS:
                    continue
                if (
                    target.name == "baseline"
                    and name == "capacity"
                    and (self.args.no_baseline_capacity)
                ):
                    continue
                t0 = time.monotonic()
                load0 = self.cpu_accounts()
                _progress(f"[{target.name}] {name} ...")
                try:
                    row[target.name] = await fns[name](target)
                    row[target.name]["elapsed_s"] = round(time.monotonic() - t0, 1)
                    row[target.name]["foreign_cpu_pct"] = self.foreign_pct(load0)
                    _progress(
                        f"[{target.name}] {name} done in {time.monotonic() - t0:.1f}s: "
                        + report.brief(name, row[target.name])
                    )
                except Skip as exc:
                    row[target.name] = {"skipped": str(exc)}
                except Exception as exc:
                    row[target.name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
                    _progress(f"[{target.name}] {name} FAILED: {exc}")
                    await target.stop()
                    for w in list(REGISTRY.workers):
                        w.kill()

    def cpu_accounts(self) -> tuple[float, float, float]:
        """(wall, host busy CPU-seconds, CPU-seconds of this bench and its children)."""
        busy = 0.0
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
            busy = sum(int(x) for x in fields[1:4]) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        for proc in REGISTRY.procs:  # live children (Redis): not in children_* until reaped
            own += tree_cpu(proc.pid)
        for w in REGISTRY.workers:
            own += cpu_seconds(w.pid) or 0.0
        return time.monotonic(), busy, own

    def foreign_pct(self, before: tuple[float, float, float]) -> float:
        """Share of the machine (all cores) used by processes that are not the bench's
        (e.g. a test suite running meanwhile): a noisy neighbour skews every figure."""
        wall0, busy0, own0 = before
        wall1, busy1, own1 = self.cpu_accounts()
        cores = os.cpu_count() or 1
        return round(
            max(0.0, 100.0 * ((busy1 - busy0) - (own1 - own0)) / ((wall1 - wall0) * cores)), 1
        )

    def machine(self) -> dict[str, Any]:
        model = ""
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        head = ""
        with contextlib.suppress(Exception):
            head = subprocess.run(
                ["git", "-C", str(REPO), "log", "-1", "--format=%h %s"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        return {
            "cpu_model": model or platform.processor(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "redis": self.redis_version,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "git_head": head or "(no commits)",
            "pinning": (
                f"server CPU {SERVER_CPU}; client, publisher, redis CPU {LOAD_CPU}"
                if self.pinning.enabled
                else "off"
            ),
            "mode": "quick" if self.quick else "full",
            "publisher": self.pub_mode,
            "ours": "available" if self.ours_ok else self.ours_note,
            "nofile": list(raise_nofile()),
        }


def _progress(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="FinVision Realtime SSE benchmark: our API vs a naive baseline.",
    )
    ap.add_argument("--quick", action="store_true", help="smaller counts (~1-2 minutes)")
    ap.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        metavar="SCENARIO",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument(
        "--target",
        choices=("both", "ours", "baseline"),
        default="both",
        help="which servers to measure (default both)",
    )
    ap.add_argument(
        "--no-nchan",
        action="store_true",
        help="do not measure Nchan beside us on the delivery rows (it is measured with "
        "--target both or ours when nginx + libnginx-mod-nchan are installed or installable)",
    )
    ap.add_argument(
        "--publisher",
        choices=("auto", "streams", "raw"),
        default="auto",
        help="publish via streams.apublish or a raw XADD+PUBLISH stand-in (default: streams "
        "when available)",
    )
    ap.add_argument(
        "--no-baseline-capacity",
        action="store_true",
        help="skip the optional baseline capacity run",
    )
    ap.add_argument(
        "--py-spy",
        nargs="*",
        metavar="SCENARIO",
        help="sample the servers with py-spy during the measured phase (of these scenarios; "
        "all when none given); needs `pip install py-spy`; perturbs the figures a little",
    )
    ap.add_argument(
        "--clients",
        type=int,
        default=1,
        metavar="N",
        help="load-client processes (all on the load CPU; default 1)",
    )
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size of the distinct-user scenarios (bench/storm.py): 1.0 = 10,000 users",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    bench = Bench(args)
    started = time.monotonic()

    def _term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # A shell starts background jobs with SIGINT ignored; Ctrl-C / kill -INT must still stop us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGHUP, _term)
    interrupted = False
    try:
        bench.setup()
        if not bench.ours_ok:
            _progress(f"our server is not measured: {bench.ours_note}")
        _progress(f"publisher mode: {bench.pub_mode}; logs in {bench.log_dir}")
        asyncio.run(bench.run())
    except KeyboardInterrupt:
        interrupted = True
        _progress("interrupted; stopping everything")
    finally:
        bench.teardown()
    if not bench.results:
        return 130 if interrupted else 1
    machine = bench.machine()
    duration = time.monotonic() - started
    machine["duration_s"] = round(duration, 1)
    doc = {
        "machine": machine,
        "params": asdict(bench.p),
        "interrupted": interrupted,
        "scenarios": bench.results,
    }
    table = report.render(doc)
    print(table)
    # An interrupted run does not replace the last complete results.
    out = args.out / "tmp" if interrupted else args.out
    stem = "interrupted" if interrupted else "latest"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(_clean(doc), indent=2) + "\n")
    (out / f"{stem}.txt").write_text(table + "\n")
    _progress(f"wrote {out / stem}.json and {stem}.txt ({duration:.0f}s total)")
    return 130 if interrupted else 0


def _clean(o: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (strict JSON has no NaN)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    if o is None or isinstance(o, str | int | bool):
        return o
    return str(o)
