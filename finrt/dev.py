"""``finrt dev``: every process on embedded defaults (see ``make run``)."""

from __future__ import annotations


def run_dev(*, port: int = 8000, seed: bool = True) -> int:
    import subprocess
    import sys

    return subprocess.call([sys.executable, "-m", "finrt.cli", "api", "--port", str(port)])
