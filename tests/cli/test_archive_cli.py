"""CLI: ``xgate log archive`` and ``xgate log verify-archive``."""

from __future__ import annotations

import asyncio
import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from cli.archive import register
from protocol.archive import LINKING_INFO
from protocol.identifiers import ClientId, ServiceId
from security_server.archiver import load_state
from security_server.messagelog import LogRecord, MessageLog

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
REFERENCE_ARCHIVE = FIXTURES / "messagelog" / "message-archive-0.zip"
LOGGED = datetime(2025, 2, 1, 10, 0, 0, tzinfo=UTC)
CLIENT = ClientId("DEV", "COM", "1111", "SUB")
SERVICE = ServiceId(ClientId("DEV", "COM", "9999", "PROV"), "getRandom", "v1")


def make_group() -> click.Group:
    @click.group()
    def log() -> None:
        """Stand-in for the ``xgate log`` group."""

    register(log)
    return log


def xgate_log(*args: str) -> Result:
    return CliRunner().invoke(make_group(), list(args))


async def fill(path: Path, query_ids: list[str]) -> None:
    message_log = MessageLog.open(path)
    try:
        for n, query_id in enumerate(query_ids):
            at = LOGGED + timedelta(minutes=n)
            record_id = await message_log.append(
                LogRecord(
                    query_id=query_id,
                    x_request_id="x",
                    response=False,
                    filed_under=CLIENT,
                    client=CLIENT,
                    service=SERVICE,
                    message=b"<env/>",
                    signature=b"<sig/>",
                    hash_chain_result=None,
                    hash_chain=None,
                    attachments=[],
                    rest=False,
                ),
                at,
            )
            await message_log.set_timestamp(record_id, b"<sig/>", b"token", at)
    finally:
        message_log.close()


def test_register_adds_both_commands() -> None:
    assert {"archive", "verify-archive"} <= set(make_group().commands)


def test_archive_then_verify_two_archives(tmp_path: Path) -> None:
    server = tmp_path / "ss1"
    server.mkdir()
    out = tmp_path / "archives"
    asyncio.run(fill(server / "messagelog.db", ["q-1", "q-2"]))

    first = xgate_log("archive", "--dir", str(server), "--out", str(out))
    assert first.exit_code == 0, first.output
    asyncio.run(fill(server / "messagelog.db", ["q-3"]))
    second = xgate_log("archive", "--dir", str(server), "--out", str(out))
    assert second.exit_code == 0, second.output

    [first_path] = first.stdout.split()
    [second_path] = second.stdout.split()
    checked = xgate_log("verify-archive", first_path, "--first")
    assert checked.exit_code == 0, checked.output
    first_digest = checked.stdout.strip()
    chained = xgate_log("verify-archive", second_path, "--previous", first_digest)
    assert chained.exit_code == 0, chained.output
    assert chained.stdout.strip() == load_state(out)[""].digest
    assert Path(second_path).name == load_state(out)[""].name


def test_archive_with_nothing_to_do(tmp_path: Path) -> None:
    server = tmp_path / "ss1"
    server.mkdir()
    asyncio.run(fill(server / "messagelog.db", []))

    result = xgate_log("archive", "--dir", str(server), "--out", str(tmp_path / "o"))

    assert result.exit_code == 0
    assert result.stdout == ""


def test_archive_needs_a_message_log(tmp_path: Path) -> None:
    result = xgate_log("archive", "--dir", str(tmp_path), "--out", str(tmp_path / "o"))

    assert result.exit_code == 1
    assert "[NoMessageLog]" in result.output


def test_verify_reference_archive_prints_its_last_digest() -> None:
    if not REFERENCE_ARCHIVE.exists():
        pytest.skip("X-Road fixtures are not beside the repository")

    result = xgate_log("verify-archive", str(REFERENCE_ARCHIVE), "--first")

    assert result.exit_code == 0, result.output
    digest = result.stdout.strip()
    assert digest.startswith("9011ab55") and digest.endswith("58eaa")


def test_verify_reference_archive_with_a_wrong_previous_digest() -> None:
    if not REFERENCE_ARCHIVE.exists():
        pytest.skip("X-Road fixtures are not beside the repository")

    result = xgate_log("verify-archive", str(REFERENCE_ARCHIVE), "--previous", "ab")

    assert result.exit_code == 1
    assert "[ArchivePreviousDigestMismatch]" in result.output


def test_verify_tampered_archive_fails(tmp_path: Path) -> None:
    server = tmp_path / "ss1"
    server.mkdir()
    asyncio.run(fill(server / "messagelog.db", ["q-1", "q-2"]))
    written = xgate_log("archive", "--dir", str(server), "--out", str(tmp_path / "o"))
    path = Path(written.stdout.strip())
    with zipfile.ZipFile(path) as archive:
        entries = [(n, archive.read(n)) for n in archive.namelist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as forged:
        for name, data in entries:
            forged.writestr(name, data if name == LINKING_INFO else data + b"!")
    path.write_bytes(buffer.getvalue())

    result = xgate_log("verify-archive", str(path), "--first")

    assert result.exit_code == 1
    assert "[ArchiveDigestMismatch]" in result.output


@pytest.mark.parametrize(
    "options", [[], ["--first", "--previous", "ab"]], ids=["neither", "both"]
)
def test_verify_needs_exactly_one_of_previous_and_first(
    tmp_path: Path, options: list[str]
) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(b"not used")

    result = xgate_log("verify-archive", str(path), *options)

    assert result.exit_code == 2
    assert "exactly one" in result.output
