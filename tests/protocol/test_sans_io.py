"""The protocol core stays free of I/O: no event loop, sockets, databases or clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"
FORBIDDEN_MODULES = {
    "aiohttp",
    "asyncio",
    "socket",
    "sqlite3",
    "sqlite_utils",
    "requests",
    "urllib.request",
    "http.client",
    "subprocess",
    "random",
    "secrets",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "urandom", "open"}
ROLE_PACKAGES = {"security_server", "central_server", "timestamp", "cli", "demo"}


def modules() -> list[Path]:
    return sorted(PROTOCOL.glob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.name)
def test_protocol_module_imports_no_io_library_or_role(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
    roots = {name.split(".")[0] for name in imported}
    assert not (imported & FORBIDDEN_MODULES), imported & FORBIDDEN_MODULES
    assert not (roots & FORBIDDEN_MODULES), roots & FORBIDDEN_MODULES
    assert not (roots & ROLE_PACKAGES), roots & ROLE_PACKAGES


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.name)
def test_protocol_module_reads_no_clock_and_opens_no_file(path: Path) -> None:
    tree = ast.parse(path.read_text())
    calls = {
        node.func.attr
        if isinstance(node.func, ast.Attribute)
        else getattr(node.func, "id", "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    assert not (calls & FORBIDDEN_CALLS), calls & FORBIDDEN_CALLS
