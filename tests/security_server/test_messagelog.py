from __future__ import annotations

import asyncio
import base64
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from asn1crypto import cms
from cryptography.hazmat.primitives import serialization
from lxml import etree

from protocol.digests import b64, sha512
from protocol.errors import LoggingFailed
from protocol.identifiers import ClientId, ServiceId
from protocol.timestamp import XADES_NS, signature_value, verify_timestamp_token
from security_server.messagelog import LogRecord, MessageLog, signature_hash
from security_server.timestamper import Timestamper
from timestamp.tsa import TimestampAuthority, tsa_app

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
NOW = datetime(2025, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
CLIENT = ClientId("DEV", "COM", "4321", "CLIENT-SUB")
PROVIDER = ClientId("DEV", "COM", "1234", "PROV/SUB")  # '/' must survive the store
SERVICE = ServiceId(PROVIDER, "getRandom", "v1")


def unstamped_signature() -> bytes:
    path = FIXTURES / "signatures" / "sign-0.xml"
    if not path.exists():
        pytest.skip("fixture signatures/sign-0.xml is absent")
    return path.read_bytes()


def record(query_id: str = "q-1", *, signature: bytes = b"<sig/>", **kw) -> LogRecord:
    fields = dict(
        query_id=query_id,
        x_request_id="x-1",
        response=False,
        filed_under=CLIENT,
        client=CLIENT,
        service=SERVICE,
        message=b"<env>\r\n\xc3\xa4</env>",
        signature=signature,
        hash_chain_result=None,
        hash_chain=None,
        attachments=[],
        rest=False,
    )
    fields.update(kw)
    return LogRecord(**fields)


@pytest.fixture
def message_log(tmp_path: Path):
    log = MessageLog.open(tmp_path / "messagelog.db")
    yield log
    log.close()


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("tsa")
    authority = TimestampAuthority.create(directory, "Log TSA", NOW, key_size=2048)
    yield authority
    authority.close()


# -- the store --------------------------------------------------------------


@pytest.mark.asyncio
async def test_append_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "messagelog.db"
    log = MessageLog.open(path)
    rest = record(
        "q/ä 1",
        response=True,
        filed_under=PROVIDER,
        rest=True,
        attachments=[b"body \x00 one", b"two"],
        hash_chain_result=b"<hcr/>",
        hash_chain=b"<hc/>",
    )
    first = await log.append(record("q-0"), NOW)
    second = await log.append(rest, NOW)
    log.close()

    reopened = MessageLog.open(path)
    try:
        (found,) = await reopened.find(query_id="q/ä 1")
        everything = await reopened.find()
    finally:
        reopened.close()

    assert second > first
    assert [r.id for r in everything] == [first, second]
    assert found.id == second
    assert found.time == NOW  # milliseconds are kept
    assert (found.query_id, found.x_request_id) == ("q/ä 1", "x-1")
    assert found.response is True and found.rest is True
    assert found.filed_under == PROVIDER
    assert found.client == CLIENT
    assert found.service == SERVICE
    assert found.message == rest.message
    assert found.signature == rest.signature
    assert found.attachments == [b"body \x00 one", b"two"]
    assert (found.hash_chain_result, found.hash_chain) == (b"<hcr/>", b"<hc/>")
    assert found.signature_hash == b64(sha512(rest.signature))
    assert found.timestamp_token is None and found.stamped_at is None
    assert found.archived is False


@pytest.mark.asyncio
async def test_append_after_close_fails_with_logging_failed(tmp_path: Path) -> None:
    log = MessageLog.open(tmp_path / "messagelog.db")
    log.close()
    with pytest.raises(LoggingFailed) as err:
        await log.append(record(), NOW)
    assert err.value.code == "LoggingFailed"


def test_open_unwritable_path_fails(tmp_path: Path) -> None:
    with pytest.raises(LoggingFailed):
        MessageLog.open(tmp_path / "missing-dir" / "messagelog.db")


@pytest.mark.asyncio
async def test_set_timestamp_once(message_log: MessageLog) -> None:
    record_id = await message_log.append(record(), NOW)
    other_id = await message_log.append(record("q-2"), NOW)
    stamped_at = NOW + timedelta(seconds=5)

    await message_log.set_timestamp(record_id, b"<sig stamped/>", b"token", stamped_at)

    stored = await message_log.get(record_id)
    assert stored is not None
    assert stored.signature == b"<sig stamped/>"
    assert stored.signature_hash == signature_hash(b"<sig stamped/>")
    assert stored.timestamp_token == b"token"
    assert stored.stamped_at == stamped_at
    assert [r.id for r in await message_log.unstamped()] == [other_id]
    with pytest.raises(LoggingFailed):
        await message_log.set_timestamp(record_id, b"<x/>", b"t", stamped_at)
    assert await message_log.get(999) is None


# -- the timestamper --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def serve(tsa: TimestampAuthority) -> TestServer:
    server = TestServer(tsa_app(tsa, clock=lambda: NOW))
    await server.start_server()
    return server


@pytest.mark.asyncio
async def test_stamps_pending_records_end_to_end(message_log: MessageLog, tsa) -> None:
    signature = unstamped_signature()
    ids = [
        await message_log.append(record(f"q-{n}", signature=signature), NOW)
        for n in range(2)
    ]
    server = await serve(tsa)
    dead = f"http://127.0.0.1:{free_port()}/"
    try:
        async with aiohttp.ClientSession() as session:
            timestamper = Timestamper(
                message_log,
                tsa_sources=lambda: [
                    (dead, tsa.cert),
                    (str(server.make_url("/")), tsa.cert),
                ],
                session=session,
                clock=lambda: NOW,
            )
            assert await timestamper.stamp_pending() == 2
    finally:
        await server.close()

    assert await message_log.unstamped() == []
    assert timestamper.last_success == NOW
    assert timestamper.last_error is None
    for record_id in ids:
        stored = await message_log.get(record_id)
        assert stored is not None and stored.stamped_at is not None
        root = etree.fromstring(stored.signature)  # still well-formed
        properties = root.find(f".//{{{XADES_NS}}}UnsignedSignatureProperties")
        assert etree.QName(properties[0]).localname == "SignatureTimeStamp"
        embedded = base64.b64decode(properties[0][0].text)
        assert embedded == stored.timestamp_token
        info = verify_timestamp_token(
            embedded, signature_value(stored.signature), [tsa.cert]
        )
        assert info.gen_time == NOW.replace(microsecond=0)  # whole seconds
        certs = cms.ContentInfo.load(embedded)["content"]["certificates"]
        cert_der = tsa.cert.public_bytes(serialization.Encoding.DER)
        assert cert_der in [c.chosen.dump() for c in certs]
        assert stored.signature_hash == signature_hash(stored.signature)
        assert stored.signature != signature
        assert signature_value(stored.signature) == signature_value(signature)


@pytest.mark.asyncio
async def test_tsa_down_leaves_records_unstamped(message_log: MessageLog, tsa) -> None:
    await message_log.append(record(signature=unstamped_signature()), NOW)
    url = f"http://127.0.0.1:{free_port()}/"
    async with aiohttp.ClientSession() as session:
        timestamper = Timestamper(
            message_log,
            tsa_sources=lambda: [(url, tsa.cert)],
            session=session,
            clock=lambda: NOW,
        )
        assert await timestamper.stamp_pending() == 0

    assert len(await message_log.unstamped()) == 1
    assert timestamper.last_error
    assert timestamper.last_success is None


@pytest.mark.asyncio
async def test_no_tsa_configured(message_log: MessageLog) -> None:
    await message_log.append(record(signature=unstamped_signature()), NOW)
    async with aiohttp.ClientSession() as session:
        timestamper = Timestamper(
            message_log, tsa_sources=list, session=session, clock=lambda: NOW
        )
        assert await timestamper.stamp_pending() == 0
    assert "no TSA" in (timestamper.last_error or "")


@pytest.mark.asyncio
async def test_unreadable_signature_does_not_block_others(
    message_log: MessageLog, tsa
) -> None:
    bad_id = await message_log.append(
        record("bad", signature=b"<not-a-signature/>"), NOW
    )
    good_id = await message_log.append(
        record("good", signature=unstamped_signature()), NOW
    )
    server = await serve(tsa)
    try:
        async with aiohttp.ClientSession() as session:
            timestamper = Timestamper(
                message_log,
                tsa_sources=lambda: [(str(server.make_url("/")), tsa.cert)],
                session=session,
                clock=lambda: NOW,
            )
            assert await timestamper.stamp_pending() == 1
    finally:
        await server.close()

    assert [r.id for r in await message_log.unstamped()] == [bad_id]
    assert (await message_log.get(good_id)).stamped_at is not None
    assert "MalformedSignature" in (timestamper.last_error or "")


@pytest.mark.asyncio
async def test_run_wakes_on_notify(message_log: MessageLog, tsa) -> None:
    server = await serve(tsa)
    try:
        async with aiohttp.ClientSession() as session:
            timestamper = Timestamper(
                message_log,
                tsa_sources=lambda: [(str(server.make_url("/")), tsa.cert)],
                session=session,
                clock=lambda: NOW,
                interval_seconds=3600,
            )
            task = asyncio.create_task(timestamper.run())
            await asyncio.sleep(0.05)  # first round: nothing to do, then it sleeps
            record_id = await message_log.append(
                record(signature=unstamped_signature()), NOW
            )
            timestamper.notify()
            for _ in range(200):
                stored = await message_log.get(record_id)
                if stored is not None and stored.stamped_at is not None:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await server.close()

    assert stored is not None and stored.stamped_at is not None
