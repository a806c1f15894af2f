"""Nchan (nginx's pub/sub module) as a peer target: nginx run as a child on a free port.

Debian ships it as ``nginx`` plus ``libnginx-mod-nchan``; :func:`available` installs them with
apt-get where it may (root, apt present) and otherwise says why Nchan is not measured. The
configuration (:data:`CONF`) is written to a temporary directory for each run: one worker
process (like our one API process), EventSource subscribers on ``/sub/<channel>`` and
publishers on ``/pub/<channel>``, messages kept in Nchan's own memory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.procs import SERVER_CPU, Proc, free_port, spawn, wait_http_ok

if TYPE_CHECKING:
    from bench.runner import Bench

MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")


def _nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None
    )


RESTART_NOTE = (
    "Nchan keeps its messages in nginx's shared memory, which a restart empties (resuming "
    "across one needs its Redis mode, a different set-up)"
)

CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
load_module {module};
worker_rlimit_nofile 100000;
events {{ worker_connections 60000; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /healthz {{ return 200 "ok"; }}
        location ~ ^/sub/(.+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
        }}
        location ~ ^/pub/(.+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
        }}
    }}
}}
"""

_checked: tuple[bool, str] | None = None


def available() -> tuple[bool, str]:
    """(True, "") when nginx with Nchan can run here, installing it with apt-get if needed;
    else (False, why not)."""
    global _checked
    if _checked is None:
        _checked = _check()
    return _checked


def _check() -> tuple[bool, str]:
    if _nginx() and MODULE.exists():
        return True, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False, "nginx + libnginx-mod-nchan not installed (and no root apt-get here)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "nginx", "libnginx-mod-nchan"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not (_nginx() and MODULE.exists()):
        return False, f"apt-get install nginx libnginx-mod-nchan failed: {done.stderr[-200:]}"
    return True, ""


async def start(bench: Bench) -> tuple[Proc, int, Path]:
    tmp = Path(tempfile.mkdtemp(prefix="finrt-nchan-"))
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(CONF.format(tmp=tmp, module=MODULE, port=port))
    proc = spawn(
        "nchan",
        [_nginx() or "nginx", "-p", str(tmp), "-c", str(conf)],
        env=bench.env,
        cpu=SERVER_CPU,
        pinning=bench.pinning,
        log_dir=bench.log_dir,
    )
    await wait_http_ok(port, "/healthz", proc, timeout=30)
    return proc, port, tmp


async def measure(
    bench: Bench, run: Callable[[int, Proc], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """``run(port, process)`` against a fresh Nchan, or ``{"skipped": why}``."""
    if bench.args.no_nchan:
        return {"skipped": "--no-nchan"}
    ok, why = await asyncio.to_thread(available)
    if not ok:
        return {"skipped": why}
    proc, port, tmp = await start(bench)
    try:
        return await run(port, proc)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        await asyncio.to_thread(proc.stop)
        shutil.rmtree(tmp, ignore_errors=True)
