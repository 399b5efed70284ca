"""``xgate server anchor-import``: a new anchor replaces the stored one only
after a configuration downloads and verifies through it (global-configuration.md §5).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from demo.ecosystem import Ecosystem, free_ports
from security_server.confclient import AnchorInstanceMismatch, import_anchor
from security_server.server import ANCHOR_FILE

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


async def anchor_import(server_dir: Path, anchor: Path) -> tuple[int, str]:
    args = ["server", "anchor-import", "--dir", str(server_dir), str(anchor)]
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    return result.exit_code, result.output


async def test_same_anchor_reimports(ecosystem: Ecosystem) -> None:
    server_dir = ecosystem.directory / "ss-agency"
    code, output = await anchor_import(server_dir, ecosystem.anchor)
    assert code == 0, output
    assert "fingerprint" in output
    assert (server_dir / ANCHOR_FILE).read_bytes() == ecosystem.anchor.read_bytes()


async def test_anchor_of_another_instance_changes_nothing(
    ecosystem: Ecosystem, tmp_path: Path
) -> None:
    server_dir = ecosystem.directory / "ss-agency"
    before = (server_dir / ANCHOR_FILE).read_bytes()
    other = tmp_path / "other.xml"
    other.write_bytes(
        before.replace(b"<instanceIdentifier>DEMO<", b"<instanceIdentifier>OTHER<")
    )
    assert other.read_bytes() != before
    code, output = await anchor_import(server_dir, other)
    assert code != 0
    assert "[AnchorInstanceMismatch]" in output
    assert (server_dir / ANCHOR_FILE).read_bytes() == before

    with pytest.raises(AnchorInstanceMismatch):
        await import_anchor(
            server_dir / ANCHOR_FILE,
            other.read_bytes(),
            instance="DEMO",
        )


async def test_anchor_that_does_not_verify_changes_nothing(
    ecosystem: Ecosystem, tmp_path: Path
) -> None:
    server_dir = ecosystem.directory / "ss-agency"
    before = (server_dir / ANCHOR_FILE).read_bytes()
    conf_port = str(ecosystem.ports["central_conf"]).encode()
    dead = tmp_path / "dead.xml"
    dead.write_bytes(before.replace(conf_port, str(free_ports(1)[0]).encode()))
    assert dead.read_bytes() != before
    code, output = await anchor_import(server_dir, dead)
    assert code != 0
    assert output.startswith("Error: [")
    assert (server_dir / ANCHOR_FILE).read_bytes() == before
    assert not list(server_dir.glob(".anchor-check-*"))
