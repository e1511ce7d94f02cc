"""Imports point down only: ``cli | api → services → proxy | store → core → wire``.

Walks every module under src/ledgergate with ``ast`` (imports inside functions and
``TYPE_CHECKING`` blocks count too: they are dependencies all the same) and reports each
import that points up or sideways as ``file:line``. The rule, per package:

- ``wire/``: only ``wire/`` (and the standard library and third-party packages);
- ``core/``: only ``core/`` and ``wire/``;
- ``proxy/`` and ``store/``: only themselves, ``core/`` and ``wire/`` (they are siblings:
  neither imports the other);
- ``services/``: anything but ``api/`` and ``cli/``;
- ``api/``: anything but ``cli/`` (the API and the CLI are two faces of the services);
- ``cli/``: anything (``serve`` starts the API).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "ledgergate"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE
ALL = frozenset({"wire", "core", "proxy", "store", "services", "api", "cli"})
ALLOWED: dict[str, frozenset[str]] = {
    "wire": frozenset({"wire"}),
    "core": frozenset({"core", "wire"}),
    "proxy": frozenset({"proxy", "core", "wire"}),
    "store": frozenset({"store", "core", "wire"}),
    "services": ALL - {"api", "cli"},
    "api": ALL - {"cli"},
    "cli": ALL,
}


def module_name(path: Path, root: Path = ROOT) -> list[str]:
    parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported(path: Path, tree: ast.Module, root: Path = ROOT) -> list[tuple[int, list[str]]]:
    """(line, dotted module as parts) for every import of a ledgergate module."""
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here[:-1]
    out: list[tuple[int, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if not node.module or target == [PACKAGE]:  # the names may be modules
                out += [(node.lineno, [*target, a.name]) for a in node.names]
            else:
                out.append((node.lineno, target))
    return [(line, t) for line, t in out if t[0] == PACKAGE]


def violations(root: Path = ROOT) -> list[str]:
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        layer = name[1] if len(name) > 1 else None
        if layer is None:
            continue  # ledgergate/__init__.py: checked below
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, target in imported(path, tree, root):
            if len(target) < 2:
                continue
            dep = target[1]
            if layer in ALLOWED and dep in ALL and dep not in ALLOWED[layer]:
                rel = path.relative_to(root.parents[1])
                found.append(f"{rel}:{line}: {layer}/ imports {'.'.join(target)}")
    return found


def test_every_module_belongs_to_a_layer() -> None:
    for path in ROOT.iterdir():
        if path.is_dir() and (path / "__init__.py").exists():
            assert path.name in ALL, f"{path.name}/ is in no layer: add it to tests/test_layers.py"


def test_the_top_level_package_imports_nothing_of_its_own() -> None:
    tree = ast.parse((ROOT / "__init__.py").read_text())
    assert imported(ROOT / "__init__.py", tree) == []


def test_imports_point_down_only() -> None:
    found = violations()
    assert not found, "imports against the layering:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source,expected",
    [
        ("from ledgergate.proxy.pg import x", ["ledgergate", "proxy", "pg"]),
        ("import ledgergate.services.tokens", ["ledgergate", "services", "tokens"]),
        ("from ledgergate import cli", ["ledgergate", "cli"]),
        ("from ...services import keys", ["ledgergate", "services"]),
        ("from .. import session", ["ledgergate", "wire", "session"]),
        ("from ... import core", ["ledgergate", "core"]),
        ("from .frames import build", ["ledgergate", "wire", "pg", "frames"]),
    ],
)
def test_the_checker_resolves_imports(source: str, expected: list[str]) -> None:
    path = ROOT / "wire" / "pg" / "handshake.py"
    ((_, target),) = imported(path, ast.parse(source))
    assert target == expected


def test_the_checker_reports_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "src" / PACKAGE
    for pkg in ("wire", "core", "store", "proxy"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "wire" / "codec.py").write_text("import struct\n\nfrom ledgergate.core import x\n")
    (root / "core" / "rules.py").write_text("def f():\n    from ..proxy import pg\n")
    (root / "store" / "db.py").write_text("from ledgergate import proxy\nfrom . import base\n")
    (root / "proxy" / "shell.py").write_text("from ledgergate.wire import codec\n")
    assert violations(root) == [
        "src/ledgergate/core/rules.py:2: core/ imports ledgergate.proxy",
        "src/ledgergate/store/db.py:1: store/ imports ledgergate.proxy",
        "src/ledgergate/wire/codec.py:3: wire/ imports ledgergate.core",
    ]
