"""CLI: ``xgate server message-body-logging`` and the body-not-logged note of ``log``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from cli.log import log
from cli.main import main
from protocol.auditor import has_body_not_logged_marker
from protocol.identifiers import ClientId, ServiceId
from security_server.messagelog import LogRecord, MessageLog, strip_body
from security_server.serverconf import ServerConf
from security_server.settings import ServerSettings

CLIENT = ClientId("DEV", "COM", "4321", "SUB")
SERVICE = ServiceId(ClientId("DEV", "COM", "1234", "PROV"), "getRandom", "v1")
LOGGED_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
SOAP = (
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<s:Header/><s:Body><p xmlns='urn:p'>secret</p></s:Body></s:Envelope>"
)


def make_server_dir(directory: Path) -> None:
    directory.mkdir()
    ServerSettings("DEV", "COM", "4321", "ss1").save(directory)
    serverconf = ServerConf(directory)
    serverconf.add_client(CLIENT)
    serverconf.close()


def test_switch_is_stored_per_client(tmp_path: Path) -> None:
    directory = tmp_path / "ss"
    make_server_dir(directory)

    off = CliRunner().invoke(
        main,
        [
            "server",
            "message-body-logging",
            "--dir",
            str(directory),
            "COM/4321/SUB",
            "off",
        ],
    )
    assert off.exit_code == 0, off.output
    serverconf = ServerConf(directory)
    try:
        assert serverconf.message_body_logging(CLIENT) is False
        assert serverconf.message_body_logging(CLIENT.member) is None
    finally:
        serverconf.close()

    on = CliRunner().invoke(
        main,
        [
            "server",
            "message-body-logging",
            "--dir",
            str(directory),
            "COM/4321/SUB",
            "on",
        ],
    )
    assert on.exit_code == 0, on.output
    serverconf = ServerConf(directory)
    try:
        assert serverconf.message_body_logging(CLIENT) is True
    finally:
        serverconf.close()


def test_unknown_client_is_refused_with_its_code(tmp_path: Path) -> None:
    directory = tmp_path / "ss"
    make_server_dir(directory)

    result = CliRunner().invoke(
        main,
        ["server", "message-body-logging", "--dir", str(directory), "COM/9/X", "off"],
    )

    assert result.exit_code != 0
    assert "[UnknownMember]" in result.output


async def _fill(path: Path) -> None:
    message_log = MessageLog.open(path)
    try:
        record = LogRecord(
            query_id="stripped-1",
            x_request_id="x-1",
            response=False,
            filed_under=CLIENT,
            client=CLIENT,
            service=SERVICE,
            message=SOAP,
            signature=b"<sig/>",
            hash_chain_result=None,
            hash_chain=None,
            attachments=[],
            rest=False,
        )
        record_id = await message_log.append(strip_body(record), LOGGED_AT)
        await message_log.set_timestamp(record_id, b"<sig/>", b"token", LOGGED_AT)
    finally:
        message_log.close()


def test_find_and_export_say_the_body_was_not_logged(tmp_path: Path) -> None:
    directory = tmp_path / "ss"
    make_server_dir(directory)
    asyncio.run(_fill(directory / "messagelog.db"))

    found = CliRunner().invoke(log, ["find", "--dir", str(directory)])
    assert found.exit_code == 0, found.output
    assert found.output.splitlines()[0].endswith("\tbody-not-logged")

    out = tmp_path / "out"
    exported = CliRunner().invoke(
        log,
        [
            "export",
            "--dir",
            str(directory),
            "--query-id",
            "stripped-1",
            "--out",
            str(out),
        ],
    )
    assert exported.exit_code == 0, exported.output
    assert "body-not-logged" in exported.output
    (container,) = out.glob("*.asice")
    assert has_body_not_logged_marker(container.read_bytes())
