"""CLI: ``xgate log find|export|verify`` on a message log holding a reference record."""

from __future__ import annotations

import asyncio
import io
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.log import log
from protocol.identifiers import ClientId, ServiceId
from security_server.messagelog import LogRecord, MessageLog
from security_server.settings import ServerSettings

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
VERIFIER = FIXTURES / "asic" / "verifier"
CONF_DIR = FIXTURES / "globalconf" / "dirs" / "globalconf_good2_v3"
CLIENT = ClientId("DEV", "COM", "4321", "TestClient")
SERVICE = ServiceId(ClientId("DEV", "COM", "1234", "TestService"), "getRandom", "v1")
LOGGED_AT = datetime(2024, 12, 5, 13, 16, 30, tzinfo=UTC)

pytestmark = pytest.mark.skipif(
    not CONF_DIR.is_dir(), reason="X-Road fixtures are not beside the repository"
)


def xgate_log(*args: str) -> Result:
    return CliRunner().invoke(log, list(args))


async def _fill(path: Path, message: bytes, signature: bytes) -> None:
    message_log = MessageLog.open(path)
    try:
        record = LogRecord(
            query_id="audit-query-1",
            x_request_id="x-1",
            response=False,
            filed_under=CLIENT,
            client=CLIENT,
            service=SERVICE,
            message=message,
            signature=signature,
            hash_chain_result=None,
            hash_chain=None,
            attachments=[],
            rest=False,
        )
        stamped = await message_log.append(record, LOGGED_AT)
        await message_log.set_timestamp(stamped, signature, b"token", LOGGED_AT)
        unstamped = LogRecord(**{**_fields(record), "query_id": "audit-query-2"})
        await message_log.append(unstamped, LOGGED_AT.replace(hour=15))
    finally:
        message_log.close()


def _fields(record: LogRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with settings, a globalconf/ and a two-record log.

    The stamped record is the reference's valid single-signature container.
    """
    directory = tmp_path_factory.mktemp("logcli")
    ServerSettings("DEV", "COM", "4321", "ss2").save(directory)
    shutil.copytree(CONF_DIR, directory / "globalconf")
    source = zipfile.ZipFile(
        io.BytesIO((VERIFIER / "valid-signed-message.asice").read_bytes())
    )
    asyncio.run(
        _fill(
            directory / "messagelog.db",
            source.read("message.xml"),
            source.read("META-INF/signatures.xml"),
        )
    )
    return directory


def test_find_filters_by_query_time_client_and_service(server_dir: Path) -> None:
    everything = xgate_log("find", "--dir", str(server_dir))
    assert everything.exit_code == 0, everything.output
    lines = everything.stdout.splitlines()
    assert [line.split("\t")[2] for line in lines] == ["audit-query-1", "audit-query-2"]
    assert lines[0].endswith("\tstamped") and lines[1].endswith("\tunstamped")

    cases = {
        ("--query-id", "audit-query-2"): ["audit-query-2"],
        ("--since", "2024-12-05T14:00:00"): ["audit-query-2"],
        ("--until", "2024-12-05T14:00:00"): ["audit-query-1"],
        ("--client", "COM/4321"): ["audit-query-1", "audit-query-2"],
        ("--client", "COM/4321/Other"): [],
        ("--service", "COM/1234/TestService/getRandom"): [
            "audit-query-1",
            "audit-query-2",
        ],
        ("--service", "COM/1234/TestService/other/v1"): [],
    }
    for args, expected in cases.items():
        result = xgate_log("find", "--dir", str(server_dir), *args)
        assert result.exit_code == 0, result.output
        found = [line.split("\t")[2] for line in result.stdout.splitlines()]
        assert found == expected, args


def test_export_then_verify_against_the_servers_globalconf(
    server_dir: Path, tmp_path: Path
) -> None:
    exported = xgate_log(
        "export",
        "--dir",
        str(server_dir),
        "--query-id",
        "audit-query-1",
        "--out",
        str(tmp_path),
    )
    assert exported.exit_code == 0, exported.output
    files = sorted(tmp_path.glob("*.asice"))
    assert [f.name for f in files] == ["audit-query-1-request-1.asice"]

    verified = xgate_log("verify", "--conf", str(server_dir), str(files[0]))
    assert verified.exit_code == 0, verified.output
    assert "Verification successful." in verified.stdout
    assert "ID: SUBSYSTEM:DEV/COM/4321/TestClient" in verified.stdout


def test_export_of_an_unstamped_record_is_refused(
    server_dir: Path, tmp_path: Path
) -> None:
    result = xgate_log(
        "export",
        "--dir",
        str(server_dir),
        "--query-id",
        "audit-query-2",
        "--out",
        str(tmp_path),
    )
    assert result.exit_code == 1
    assert "[RecordNotTimestamped]" in result.output
    assert not list(tmp_path.glob("*.asice"))


def test_export_needs_a_filter_and_an_existing_log(tmp_path: Path) -> None:
    no_filter = xgate_log("export", "--dir", str(tmp_path), "--out", str(tmp_path))
    assert no_filter.exit_code == 2
    no_log = xgate_log(
        "export", "--dir", str(tmp_path), "--query-id", "q", "--out", str(tmp_path)
    )
    assert no_log.exit_code == 1
    assert "[NoMessageLog]" in no_log.output


def test_verify_many_reports_each_and_fails_if_one_fails() -> None:
    containers = sorted(str(p) for p in VERIFIER.glob("*.asice"))
    assert len(containers) > 5  # enough for the progress bar
    result = xgate_log("verify", "--conf", str(CONF_DIR), *containers)

    assert result.exit_code == 1
    assert result.stdout.count("Verification successful.") == 4
    assert result.stdout.count("Verification failed:") == 4
    assert "[MalformedSignature.InvalidHashChainRef]" in result.stdout
    assert "4 verified, 4 failed" in result.stderr


def test_verify_with_a_bad_configuration_is_a_coded_error(tmp_path: Path) -> None:
    container = str(VERIFIER / "valid-signed-message.asice")
    result = xgate_log("verify", "--conf", str(tmp_path), container)
    assert result.exit_code == 1
    assert "[GlobalConfMissingInstanceIdentifier]" in result.output
