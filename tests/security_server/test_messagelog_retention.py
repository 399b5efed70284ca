"""Message-log retention (message-log.md §7) and body stripping (§1)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from protocol.identifiers import ClientId, ServiceId
from protocol.soap import SOAP_ENV_NS
from security_server.messagelog import BatchStamp, LogRecord, MessageLog, strip_body

NOW = datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
CLIENT = ClientId("DEV", "COM", "4321", "CLIENT")
SERVICE = ServiceId(ClientId("DEV", "COM", "1234", "PROV"), "getRandom", "v1")
SOAP = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<s:Header><h>kept</h></s:Header>"
    b"<s:Body>secret<p:getRandom xmlns:p='urn:p'><p:code>38001010000</p:code>"
    b"</p:getRandom></s:Body></s:Envelope>"
)


def record(query_id: str = "q-1", **changes: object) -> LogRecord:
    fields: dict[str, object] = dict(
        query_id=query_id,
        x_request_id="x-1",
        response=False,
        filed_under=CLIENT,
        client=CLIENT,
        service=SERVICE,
        message=SOAP,
        signature=f"<sig>{query_id}</sig>".encode(),
        hash_chain_result=None,
        hash_chain=None,
        attachments=[b"attached"],
        rest=False,
    )
    fields.update(changes)
    return LogRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def message_log(tmp_path: Path):
    log = MessageLog.open(tmp_path / "messagelog.db")
    yield log
    log.close()


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# -- retention ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_remove_archived_keeps_unarchived_and_recent(
    message_log: MessageLog, tmp_path: Path
) -> None:
    old = NOW - timedelta(days=40)
    old_archived = await message_log.append(record("old-archived"), old)
    old_unarchived = await message_log.append(record("old-unarchived"), old)
    new_archived = await message_log.append(record("new-archived"), NOW)
    for record_id in (old_archived, old_unarchived, new_archived):
        await message_log.set_timestamp(record_id, b"<sig/>", b"token", old)
    await message_log.mark_archived([old_archived, new_archived])

    removed = await message_log.remove_archived(NOW - timedelta(days=30))

    assert removed == 1
    assert await message_log.get(old_archived) is None
    kept = await message_log.get(old_unarchived)
    assert kept is not None and kept.attachments == [b"attached"]
    assert await message_log.get(new_archived) is not None
    assert count(tmp_path / "messagelog.db", "message_attachment") == 2


@pytest.mark.asyncio
async def test_remove_archived_never_touches_unarchived(
    message_log: MessageLog,
) -> None:
    record_id = await message_log.append(record(), NOW - timedelta(days=400))

    assert await message_log.remove_archived(NOW) == 0
    assert await message_log.get(record_id) is not None


@pytest.mark.asyncio
async def test_remove_archived_drops_unreferenced_batch_stamps(
    message_log: MessageLog, tmp_path: Path
) -> None:
    old = NOW - timedelta(days=40)
    first = [await message_log.append(record(f"a{n}"), old) for n in range(2)]
    second = [await message_log.append(record(f"b{n}"), old) for n in range(2)]
    for ids in (first, second):
        shares = [BatchStamp(record_id, b"<chain/>") for record_id in ids]
        await message_log.set_batch_timestamp(shares, b"tok", b"<result/>", old)
    # The second batch is archived only in part: its stamp must stay.
    await message_log.mark_archived([*first, second[0]])

    assert await message_log.remove_archived(NOW) == 3

    db = tmp_path / "messagelog.db"
    assert count(db, "timestamp_record") == 1
    survivor = await message_log.get(second[1])
    assert survivor is not None
    assert survivor.timestamp_token == b"tok"
    assert survivor.timestamp_hash_chain_result == b"<result/>"


# -- body stripping -------------------------------------------------------------


def test_strip_soap_keeps_header_and_an_empty_body() -> None:
    stripped = strip_body(record())

    root = etree.fromstring(stripped.message)
    body = root.find(f"{{{SOAP_ENV_NS}}}Body")
    assert body is not None and len(body) == 0 and not body.text
    assert root.findtext(f"{{{SOAP_ENV_NS}}}Header/h") == "kept"
    assert b"38001010000" not in stripped.message
    assert stripped.attachments == []
    assert stripped.body_logged is False


def test_strip_rest_request_drops_path_query_and_body() -> None:
    message = b"POST\r\n/persons/38001010000?full=1\r\nX-Road-Client:DEV/COM/4321\r\n"
    stripped = strip_body(record(message=message, rest=True))

    assert stripped.message == b"POST\r\n\r\nX-Road-Client:DEV/COM/4321\r\n"
    assert stripped.attachments == []


def test_strip_rest_response_drops_only_the_body() -> None:
    message = b"200\r\nOK\r\nContent-Type:application/json\r\n"
    stripped = strip_body(record(message=message, rest=True, response=True))

    assert stripped.message == message
    assert stripped.attachments == []
    assert not stripped.body_logged


@pytest.mark.asyncio
async def test_body_logged_flag_is_stored(message_log: MessageLog) -> None:
    plain = await message_log.append(record("plain"), NOW)
    stripped = await message_log.append(strip_body(record("stripped")), NOW)

    got_plain = await message_log.get(plain)
    got_stripped = await message_log.get(stripped)
    assert got_plain is not None and got_plain.body_logged
    assert got_stripped is not None and not got_stripped.body_logged
    assert got_stripped.attachments == []
