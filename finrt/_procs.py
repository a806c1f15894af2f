"""Processes for ``finrt dev`` and ``finrt api``: ports (can one be listened on, and if not,
why), process groups found through /proc, and the embedded Redis run as a child of its own
(``python -m finrt._procs redis PORT DIR``), so that its redis-server sits in that child's
process group and stops with it."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    return listen_problem(host, port) is not None


def listen_problem(host: str, port: int) -> tuple[str, int] | None:
    """Why ``finrt api`` could not listen on ``host:port``, and its exit status (1: the port is
    taken, as ``finrt dev`` says it; 2: an address this machine does not have, or no address at
    all); None when it can. Tried as asyncio binds (every address the host resolves to, with
    SO_REUSEADDR), before uvicorn starts the app only to fail and stop it again."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        return (
            f"cannot listen on {where}: --host {host!r} is neither an address of this machine "
            f"nor a name that resolves ({reason})",
            2,
        )
    bound = 0
    for family, kind, proto, _, address in infos:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # a family this machine lacks (IPv6 off): asyncio skips it too
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return (
                        f"cannot listen on {where}: the port is already in use (another "
                        "`finrt api` or server?): stop it, or choose another --port",
                        1,
                    )
                if exc.errno != errno.EADDRNOTAVAIL:  # asyncio skips such an address
                    return f"cannot listen on {where}: {(exc.strerror or str(exc)).lower()}", 2
            else:
                bound += 1
    if not bound:
        return f"cannot listen on {where}: {host} is not an address of this machine", 2
    return None


def process_groups() -> dict[int, list[int]]:
    """``{pgid: [pid, ...]}`` of every process, read from /proc."""
    groups: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        groups.setdefault(int(fields[2]), []).append(int(entry.name))
    return groups


def cwd_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_groups_gone(pgids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [g for g in pgids if group_alive(g)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [g for g in alive if group_alive(g)]
    return alive


def serve_redis(port: int, data_dir: str) -> int:
    """Run an :class:`~finrt.embedded_redis.EmbeddedRedis` until SIGTERM (``finrt dev``'s
    ``redis`` process: it puts redis-server in a process group of its own)."""
    from finrt.embedded_redis import EmbeddedRedis

    stop = False

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = EmbeddedRedis(port=port, data_dir=data_dir)
    try:
        server.start()
    except RuntimeError as exc:
        print(f"error: {exc}", flush=True)
        return 1
    print(f"ready at {server.url} (append-only files in {data_dir})", flush=True)
    try:
        while not stop:
            assert server.process is not None
            if server.process.poll() is not None:
                print(f"redis-server exited with code {server.process.returncode}", flush=True)
                return 1
            time.sleep(0.2)
    finally:
        server.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "redis":
        sys.exit(serve_redis(int(sys.argv[2]), sys.argv[3]))
    sys.exit("usage: python -m finrt._procs redis PORT DATA_DIR")
