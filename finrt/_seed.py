"""``finrt dev``'s demo data: the sample CSV uploaded through the API as a user would, then
followed on the file's stream until a worker has processed it (a progress bar on a terminal,
a line per step elsewhere). A second run finds the processed file and reuses it."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from domain.sample import sample_csv

if TYPE_CHECKING:
    from finrt._console import Console

FILE_NAME = "sample.csv"
PERIODS = 24
TIMEOUT_SECONDS = 180.0
# A quiet stream is given up after this long and the file's status read instead.
READ_TIMEOUT_SECONDS = 2.0
DONE = ("processed", "failed")


class _Display:
    """Where progress goes: a rich bar on a terminal, otherwise a line at each step."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar: Any = None
        self.task: Any = None
        self._said = ""

    @contextlib.contextmanager
    def shown(self, label: str) -> Iterator[_Display]:
        if not self.console.out.isatty():
            yield self
            return
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        bar = Progress(
            TextColumn(self.console.prefix("seed") + "{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[step]}"),
            console=RichConsole(file=sys.stdout),
            transient=True,
        )
        with bar:
            self.bar, self.task = bar, bar.add_task(label, total=100, step="queued")
            try:
                yield self
            finally:
                self.bar = None

    def update(self, step: str, percent: int | None = None) -> None:
        if self.bar is not None:
            changes: dict[str, Any] = {"step": step}
            if percent is not None:
                changes["completed"] = percent
            self.bar.update(self.task, **changes)
            return
        said = f"{step} {percent}%" if percent is not None else step
        if said != self._said:
            self._said = said
            self.console.line("seed", f"{FILE_NAME}: {said}")


def seed_demo(base_url: str, token: str, console: Console, check: Callable[[], None]) -> int | None:
    """The demo user's processed sample file (uploaded now, or found from an earlier run);
    None if it could not be made (the run goes on: the dashboard just starts empty)."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        try:
            files = client.get("/api/v1/files").raise_for_status().json()["files"]
            processed = [f for f in files if f["status"] == "processed"]
            if processed:
                found = processed[0]
                console.line("seed", f"demo file {found['id']} ({found['name']}) is ready")
                return int(found["id"])
            waiting = [f for f in files if f["status"] in ("queued", "processing")]
            if waiting:
                file_id, position = int(waiting[0]["id"]), None
                console.line("seed", f"demo file {file_id} is still being processed")
            else:
                upload = client.post(
                    "/api/v1/files",
                    files={"file": (FILE_NAME, sample_csv(PERIODS), "text/csv")},
                )
                upload.raise_for_status()
                body = upload.json()
                file_id, position = int(body["file_id"]), body["last_event_id"]
                console.line("seed", f"uploaded {FILE_NAME} for the demo user as file {file_id}")
        except httpx.HTTPError as exc:
            console.line("seed", f"could not seed the demo file: {exc}")
            return None
        display = _Display(console)
        with display.shown(f"processing {FILE_NAME}"):
            try:
                status = _follow(client, file_id, position, display, check)
            except httpx.HTTPError as exc:
                status = f"unknown ({exc})"
    if status == "processed":
        console.line("seed", f"demo file {file_id} processed")
        return file_id
    console.line("seed", f"demo file {file_id} is {status}; see the worker's lines above")
    return None


def _follow(
    client: httpx.Client,
    file_id: int,
    position: str | None,
    display: _Display,
    check: Callable[[], None],
) -> str:
    """Read the file's stream (resuming from ``position``) until processing ends; when the
    stream is quiet, read the file's status, so nothing is missed whatever the timing."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    status = "queued"
    while time.monotonic() < deadline:
        check()
        status = client.get(f"/api/v1/files/{file_id}").raise_for_status().json()["status"]
        if status in DONE:
            display.update(status, 100 if status == "processed" else None)
            return str(status)
        display.update("waiting for the worker" if status == "queued" else status)
        headers = {"Last-Event-ID": position} if position else {}
        timeout = httpx.Timeout(10, read=READ_TIMEOUT_SECONDS)
        try:
            with client.stream(
                "GET", f"/api/v1/stream/files/{file_id}", headers=headers, timeout=timeout
            ) as response:
                for event_id, data in _events(response):
                    position = event_id or position
                    if data.get("type") != "file_processing":
                        continue
                    step = data["data"].get("status", "processing")
                    display.update(step, data["data"].get("percent"))
                    if step in DONE:
                        return str(step)
                    check()
        except httpx.HTTPError:
            pass  # quiet for a while, or the stream ended: read the status again
    return status


def _events(response: httpx.Response) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """``(id, envelope)`` for each SSE event (the minimal parser: one data line each)."""
    event_id: str | None = None
    data = ""
    for line in response.iter_lines():
        if not line:
            if data or event_id:
                yield event_id, json.loads(data) if data else {}
            event_id, data = None, ""
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
