"""The package's layers point one way (docs/architecture.md): the CLI on top; restore, audit,
lifecycle and rollback; snapshots; the change log; the object stores, rows and events at the
bottom. A module may import its own layer and the layers below, never one above, counting
imports inside functions and under ``TYPE_CHECKING`` too: a type-only import still ties a
lower layer to a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "daemon"

# (a package or module under daemon/, the packages it must not import)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "objectstore": ("changelog", "snapshot", "restore", "audit", "lifecycle", "rollback",
                    "capture", "keys", "cli"),
    "rows": ("changelog", "snapshot", "restore", "audit", "lifecycle", "rollback", "capture",
             "cli"),
    "spans": ("objectstore", "changelog", "snapshot", "restore", "audit", "lifecycle",
              "rollback", "capture", "cli"),
    "changelog": ("snapshot", "restore", "audit", "lifecycle", "rollback", "capture", "cli"),
    "snapshot": ("restore", "audit", "lifecycle", "rollback", "capture", "cli"),
    "restore": ("audit", "lifecycle", "rollback", "cli"),
    "lifecycle": ("audit", "rollback", "cli"),  # pins find a target's snapshot as restore does
    "audit": ("lifecycle", "rollback", "cli"),
    "rollback": ("lifecycle", "cli"),
}


def modules(part: str) -> list[Path]:
    path = PACKAGE / part
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def imported(path: Path) -> set[str]:
    """Every ``daemon.*`` module the file imports, as its name under daemon/."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n.removeprefix("daemon.") for n in names if n.startswith("daemon.")}


def top(name: str) -> str:
    first = name.split(".")[0]
    return "cli" if first.startswith("cli") else first


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(part: str) -> None:
    found = [f"{path.relative_to(PACKAGE.parent)} imports daemon.{name}"
             for path in modules(part) for name in sorted(imported(path))
             if top(name) in FORBIDDEN[part]]
    assert not found, "\n".join(found)


def test_only_the_cli_imports_the_cli() -> None:
    library = [p for p in sorted(PACKAGE.rglob("*.py"))
               if not (p.parent == PACKAGE and top(p.stem) == "cli")]
    found = [f"{path.relative_to(PACKAGE.parent)} imports daemon.{name}"
             for path in library for name in sorted(imported(path)) if top(name) == "cli"]
    assert not found, "\n".join(found)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from daemon.snapshot.manifest import Manifest\n"
                      "def f():\n    import daemon.restore.executor\n")
    assert {top(n) for n in imported(module)} == {"snapshot", "restore"}
