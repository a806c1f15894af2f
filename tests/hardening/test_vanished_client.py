"""A client that vanishes without a word: no FIN, no RST (a laptop shut, a mobile network gone,
a NAT that forgot the flow). The client runs in a network namespace of its own, joined to the
API by a veth pair; taking its end of the link down makes it vanish for real: the server's
packets go nowhere and nothing answers. Linux, as root, with iproute2 (skipped elsewhere)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.ops.metrics_support import scrape, value

pytestmark = pytest.mark.timeout(120)

CLIENT = """
import sys, httpx
url, token = sys.argv[1], sys.argv[2]
with httpx.stream("GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=None) as r:
    assert r.status_code == 200, r.status_code
    said = False
    for line in r.iter_lines():  # held open until the test ends it
        if line.startswith(":") and not said:
            print("open", flush=True)
            said = True
"""


@dataclass
class Namespace:
    name: str
    server_ip: str  # the API's end of the link, in the test's own namespace
    client_end: str  # the interface inside the namespace

    def run(self, *argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return _ip("netns", "exec", self.name, *argv, **kwargs)

    def vanish(self) -> None:
        """The client's end of the link goes down: from now on nothing answers the server."""
        self.run("ip", "link", "set", self.client_end, "down")


def _ip(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=30, check=True, **kwargs
    )


@pytest.fixture
def netns() -> Iterator[Namespace]:
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs Linux, root and iproute2 (ip netns, veth)")
    tag = secrets.token_hex(3)
    name, outer, inner = f"finrt-{tag}", f"fo{tag}", f"fi{tag}"
    subnet = 1 + secrets.randbelow(250)
    server_ip, client_ip = f"10.211.{subnet}.1", f"10.211.{subnet}.2"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.strip()}")
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", name)
        _ip("addr", "add", f"{server_ip}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        ns = Namespace(name, server_ip, inner)
        ns.run("ip", "addr", "add", f"{client_ip}/30", "dev", inner)
        ns.run("ip", "link", "set", inner, "up")
        ns.run("ip", "link", "set", "lo", "up")
        yield ns
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", outer)
        _ip("netns", "del", name)


def _open(server: Any) -> float:
    """Streams of the server open (scraped from /metrics)."""
    metrics = scrape(server.url)
    return sum(
        value(metrics, "finrt_connections_open", channel_kind=kind, transport="sse")
        for kind in ("user", "file")
    )


def _who(server: Any, file_id: int, token: str) -> set[str]:
    response = httpx.get(
        f"{server.url}/api/v1/files/{file_id}/presence",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {u["user_id"] for u in response.json()["users"]}


def test_a_client_that_vanishes_is_dropped_its_slot_freed_and_its_presence_gone(
    netns, start_api, token, user, make_file
):
    """The stream's pings stay unacknowledged: after FINRT_CLIENT_GONE_SECONDS the kernel drops
    the connection, the user's stream slot is free again and the file's presence loses them.
    Before, the kernel went on retransmitting for about 15 minutes: the ghost stayed present,
    and with FINRT_MAX_STREAMS_PER_USER=1 the person could not open a stream again."""
    server = start_api(
        host=netns.server_ip,
        client_gone_seconds="2",
        presence_grace_seconds="1",
        max_streams_per_user="1",
    )
    bob = f"{user}-bob"
    file_id = make_file(user, members=(bob,))
    url = f"{server.url}/api/v1/stream/files/{file_id}"
    client = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, sys.executable, "-c", CLIENT, url, token(bob)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "open", client.stderr.read()
        assert bob in _who(server, file_id, token(user))
        # The slot is taken: a second stream of bob's is refused.
        with httpx.stream(
            "GET", url, headers={"Authorization": f"Bearer {token(bob)}"}, timeout=10
        ) as refused:
            assert refused.status_code == 429, server.log()[-3000:]

        netns.vanish()
        gone_at = time.monotonic()
        while time.monotonic() - gone_at < 30:
            if _open(server) == 0 and bob not in _who(server, file_id, token(user)):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"still {_open(server)} stream(s) open and present: "
                f"{_who(server, file_id, token(user))} 30 s after the client vanished"
            )
        # bob, back on another network, opens a stream again at once.
        with httpx.stream(
            "GET", url, headers={"Authorization": f"Bearer {token(bob)}"}, timeout=10
        ) as again:
            assert again.status_code == 200
    finally:
        client.kill()
        client.wait(10)
