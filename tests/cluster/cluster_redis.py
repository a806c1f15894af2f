"""A real Redis Cluster for tests: six redis-server processes of our own on loopback (three
primaries, three replicas), joined with ``redis-cli --cluster create``.

Ports stay below 55536: a node's cluster bus listens on its port + 10000.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_block(count: int) -> int:
    """A first port such that ``count`` ports from it, and their bus ports, are free."""
    for _ in range(200):
        base = random.randrange(20000, 45000)
        ports = range(base, base + count)
        if all(_port_free(p) and _port_free(p + 10000) for p in ports):
            return base
    raise RuntimeError("no free block of ports for a test cluster")


class ClusterNode:
    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        server = shutil.which("redis-server") or "redis-server"
        self.process = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.data_dir / "nodes.conf"),
                "--cluster-node-timeout",
                "1500",
                # A replica may be promoted however long it was cut off (tests kill primaries).
                "--cluster-replica-validity-factor",
                "0",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "no",
                "--save",
                "",
                "--logfile",
                str(self.data_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL: the node is gone without a word, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class TestCluster:
    """Three primaries and three replicas on 127.0.0.1."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, root: Path, nodes: int = 6) -> None:
        self.root, self.count = root, nodes
        self._place()

    def _place(self) -> None:
        base = _free_block(self.count)
        self.nodes = [
            ClusterNode(base + i, self.root / f"node{base + i}") for i in range(self.count)
        ]

    @property
    def url(self) -> str:
        """The FINRT_REDIS_URL of this cluster (every node a seed)."""
        return "redis+cluster://" + ",".join(n.addr for n in self.nodes)

    def start(self, timeout: float = 60.0) -> TestCluster:
        for attempt in range(3):
            try:
                for node in self.nodes:
                    node.start()
                break
            except RuntimeError:
                # A port of the block was taken meanwhile (a busy machine): another block.
                self.stop()
                if attempt == 2:
                    raise
                self._place()
        subprocess.run(
            [
                shutil.which("redis-cli") or "redis-cli",
                "--cluster",
                "create",
                *(n.addr for n in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        self.wait_ok(timeout)
        return self

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Until every live node says the cluster is ok and agrees on three primaries."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = [n.client().cluster("info") for n in self.live()]
                shards = {tuple(p) for p in self.primaries_by_node()}
                if all(s["cluster_state"] == "ok" for s in states) and len(shards) == 1:
                    if all(self._replica_online(port) for port in next(iter(shards))):
                        return
            except (redis.RedisError, KeyError):
                pass
            time.sleep(0.2)
        raise RuntimeError("the test cluster did not become ok")

    def _replica_online(self, port: int) -> bool:
        """The primary at ``port`` has a replica that finished its first sync."""
        info = self.node(port).client().info("replication")
        if int(info.get("connected_slaves", 0)) < 1:
            return False
        return any(str(info.get(f"slave{i}", {}).get("state")) == "online" for i in range(4))

    def primaries_by_node(self) -> list[list[int]]:
        out = []
        for n in self.live():
            slots = n.client().execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
            out.append(sorted({int(r[2][1]) for r in slots}))
        return out

    def primaries(self) -> list[int]:
        """The ports of the primaries that own slots (as the first live node sees it)."""
        return self.primaries_by_node()[0]

    def owner(self, key: str) -> int:
        slot = self.live()[0].client().cluster("keyslot", key)
        for row in self.live()[0].client().execute_command("CLUSTER", "SLOTS"):  # type: ignore[no-untyped-call]
            if int(row[0]) <= slot <= int(row[1]):
                return int(row[2][1])
        raise LookupError(slot)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
