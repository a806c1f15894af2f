"""``finrt dev``'s console: every line prefixed by the name of the process that wrote it."""

from __future__ import annotations

import os
import sys
import threading
from typing import IO

_COLORS = {"dev": "32", "redis": "31", "worker": "35", "api": "36", "seed": "33"}
_WIDTH = max(map(len, _COLORS))


class Console:
    """Every line of this run, each prefixed by the name of the process that wrote it."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.color = self.out.isatty() and os.environ.get("NO_COLOR") is None

    @property
    def out(self) -> IO[str]:
        # Looked up at every write: a progress bar swaps sys.stdout for a proxy meanwhile.
        return self._stream or sys.stdout

    def prefix(self, name: str) -> str:
        label = f"{name:<{_WIDTH}} |"
        return f"\x1b[{_COLORS.get(name, '0')}m{label}\x1b[0m " if self.color else label + " "

    def line(self, name: str, text: str) -> None:
        self.lines(name, [text])

    def lines(self, name: str, texts: list[str]) -> None:
        prefix = self.prefix(name)
        with self._lock:
            out = self.out
            for text in texts:
                out.write(prefix + text + "\n")
            out.flush()

    def raw(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()
