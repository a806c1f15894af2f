"""``finrt notify --group`` makes digests; ``finrt stats`` prints the last day's figures by
type from the database, with the deliveries the hubs counted and the two rates."""

from __future__ import annotations

import pytest

from tests.ops.test_cli import run
from tests.support import sse

pytestmark = pytest.mark.timeout(90)


def notify(env: dict[str, str], user: str, title: str) -> str:
    result = run(
        env,
        "notify",
        user,
        "--type",
        "scheduled_report",
        "--title",
        title,
        "--message",
        "m",
        "--group",
        "monthly",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def row(output: str, type: str) -> list[str]:
    lines = [line.split() for line in output.splitlines()]
    return next(cells for cells in lines if cells and cells[0] == type)


async def test_notify_group_digests_and_stats_prints_the_rates(
    env, api, stream_url, token, inbox, user
):
    async with sse(stream_url, token(user)) as tab:
        first = notify(env, user, "one")
        assert notify(env, user, "two") == first  # joined the digest
        got = await tab.next_event(10)
        assert (got.event, got.envelope["data"]["id"]) == ("notification", first)
    me = inbox(user)
    page = await me.page()
    assert [n["count"] for n in page["notifications"]] == [2]
    assert (await me.read(first)).status_code == 200

    result = run(env, "stats")
    assert result.returncode == 0, result.stderr
    header = row(result.stdout, "type")
    assert header == [
        "type",
        "created",
        "delivered",
        "seen",
        "read",
        "acted",
        "delivery",
        "interaction",
    ]
    cells = row(result.stdout, "scheduled_report")
    created, read = int(cells[1]), int(cells[4])
    assert created >= 1 and read >= 1
    assert cells[6].endswith("%") or cells[6] == "-"
    assert cells[7].endswith("%")
    assert row(result.stdout, "all")
