"""Imports only go down: core <- domain; streams, models <- services <- api, workers <- finrt."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = ROOT / "domain"
FORBIDDEN = {"fastapi", "starlette", "celery", "redis", "sqlalchemy", "api", "workers", "models"}

# What each package may never import (its own layer and the ones below are fine).
LAYERS: dict[str, set[str]] = {
    "core": {"api", "workers", "finrt", "services", "models", "streams", "domain"},
    "domain": {"api", "workers", "finrt", "services", "models", "streams"},
    "streams": {"api", "workers", "finrt", "services", "models", "domain"},
    "models": {"api", "workers", "finrt", "services"},
    "services": {"api", "workers", "finrt"},
    "workers": {"api", "finrt"},
    "api": {"finrt"},
}


def imports_of(path: Path) -> set[str]:
    """Top-level package names a module imports (absolute imports, also inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    return imported


@pytest.mark.parametrize("path", sorted(DOMAIN.glob("*.py")), ids=lambda p: p.name)
def test_domain_modules_stay_framework_free(path: Path) -> None:
    assert not imports_of(path) & FORBIDDEN
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 400


@pytest.mark.parametrize(
    "path",
    sorted(p for pkg in LAYERS for p in (ROOT / pkg).rglob("*.py") if "migrations" not in p.parts),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_imports_only_go_down(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    wrong = imports_of(path) & LAYERS[package]
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)} from a layer above it"
