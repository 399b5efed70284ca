"""Batch time-stamps (message-log.md §4-§6): one TSA request for many records."""

from __future__ import annotations

import base64
import io
import socket
import sqlite3
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from asn1crypto import cms, tsp
from cryptography.hazmat.primitives import serialization
from lxml import etree

from protocol.asic import parse_asic
from protocol.digests import sha512, unb64
from protocol.errors import HashChainError, LoggingFailed, TimestampError
from protocol.hashchain import verify_hash_chain
from protocol.identifiers import ClientId, ServiceId
from protocol.timestamp import XADES_NS, signature_value, verify_timestamp_token
from security_server.logexport import build_record_container
from security_server.messagelog import BatchStamp, LogRecord, MessageLog
from security_server.timestamper import TS_DATA_REF, Timestamper
from timestamp.tsa import TimestampAuthority, tsa_app

XROAD = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
CLIENT = ClientId("DEV", "COM", "4321", "CLIENT")
SERVICE = ServiceId(ClientId("DEV", "COM", "1234", "PROV"), "getRandom", "v1")

pytestmark = pytest.mark.asyncio


def signatures(count: int) -> list[bytes]:
    """``count`` different readable signatures (the fixture plus a comment)."""
    path = XROAD / "signatures" / "sign-0.xml"
    if not path.exists():
        pytest.skip("fixture signatures/sign-0.xml is absent")
    base = path.read_bytes().rstrip()
    return [base + f"\n<!-- copy {n} -->".encode() for n in range(count)]


def record(query_id: str, signature: bytes) -> LogRecord:
    return LogRecord(
        query_id=query_id,
        x_request_id="x-" + query_id,
        response=False,
        filed_under=CLIENT,
        client=CLIENT,
        service=SERVICE,
        message=b"<env/>",
        signature=signature,
        hash_chain_result=None,
        hash_chain=None,
        attachments=[],
        rest=False,
    )


class CountingTSA:
    """The real TSA behind a counter of the requests it answered."""

    def __init__(self, tsa: TimestampAuthority) -> None:
        self.tsa = tsa
        self.requests: list[bytes] = []
        self.server: TestServer | None = None

    async def start(self) -> None:
        @web.middleware
        async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
            self.requests.append(await request.read())
            return await handler(request)

        app = tsa_app(self.tsa, clock=lambda: NOW)
        app.middlewares.append(count)
        self.server = TestServer(app)
        await self.server.start_server()

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/"))


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("tsa")
    authority = TimestampAuthority.create(directory, "Batch TSA", NOW, key_size=2048)
    yield authority
    authority.close()


@pytest.fixture
def message_log(tmp_path: Path):
    log = MessageLog.open(tmp_path / "messagelog.db")
    yield log
    log.close()


@pytest_asyncio.fixture
async def counting(tsa: TimestampAuthority) -> AsyncIterator[CountingTSA]:
    served = CountingTSA(tsa)
    await served.start()
    yield served
    assert served.server is not None
    await served.server.close()


def timestamper(
    message_log: MessageLog, session: aiohttp.ClientSession, url: str, tsa, **kw
) -> Timestamper:
    return Timestamper(
        message_log,
        tsa_sources=lambda: [(url, tsa.cert)],
        session=session,
        clock=lambda: NOW,
        batch=kw.pop("batch", True),
        **kw,
    )


def imprint_of(request_der: bytes) -> bytes:
    imprint = tsp.TimeStampReq.load(request_der)["message_imprint"]
    return imprint["hashed_message"].native


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/"


# -- batch -------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3, 5, 8], ids=lambda n: f"{n}-records")
async def test_one_request_stamps_every_record(
    message_log: MessageLog, counting: CountingTSA, tsa, count: int
) -> None:
    originals = signatures(count)
    ids = [
        await message_log.append(record(f"q-{n}", sig), NOW)
        for n, sig in enumerate(originals)
    ]
    async with aiohttp.ClientSession() as session:
        stamper = timestamper(message_log, session, counting.url, tsa)
        assert await stamper.stamp_pending() == count

    assert len(counting.requests) == 1
    assert await message_log.unstamped() == []
    stored = [await message_log.get(record_id) for record_id in ids]
    results = {s.timestamp_hash_chain_result for s in stored if s is not None}
    assert len(results) == 1
    (result,) = results
    assert result is not None
    # What the TSA was asked to stamp is H(ts-hashchainresult bytes) (§5).
    assert imprint_of(counting.requests[0]) == sha512(result)

    cert_der = tsa.cert.public_bytes(serialization.Encoding.DER)
    for original, found in zip(originals, stored, strict=True):
        assert found is not None and found.batch_timestamp
        assert found.signature == original  # a batch leaves the signature alone
        assert found.stamped_at == NOW
        assert found.timestamp_token is not None and found.timestamp_hash_chain
        info = verify_timestamp_token(found.timestamp_token, result, [tsa.cert])
        assert info.gen_time == NOW
        certs = cms.ContentInfo.load(found.timestamp_token)["content"]["certificates"]
        assert cert_der in [c.chosen.dump() for c in certs]
        chain = found.timestamp_hash_chain
        reports = verify_hash_chain(
            result, lambda _uri, c=chain: c, {}, data={TS_DATA_REF: original}
        )
        assert [(r.uri, r.verified) for r in reports] == [(TS_DATA_REF, True)]
        assert unb64(found.signature_hash) == sha512(original)


async def test_a_chain_does_not_verify_another_records_signature(
    message_log: MessageLog, counting: CountingTSA, tsa
) -> None:
    first, second = signatures(2)
    one = await message_log.append(record("q-1", first), NOW)
    await message_log.append(record("q-2", second), NOW)
    async with aiohttp.ClientSession() as session:
        await timestamper(message_log, session, counting.url, tsa).stamp_pending()

    stored = await message_log.get(one)
    assert stored is not None and stored.timestamp_hash_chain_result is not None
    chain = stored.timestamp_hash_chain
    with pytest.raises(HashChainError) as caught:
        verify_hash_chain(
            stored.timestamp_hash_chain_result,
            lambda _uri: chain,
            {},
            data={TS_DATA_REF: second},
        )
    assert caught.value.code.startswith("InvalidHashChain")


async def test_batch_container_has_the_reference_layout(
    message_log: MessageLog, counting: CountingTSA, tsa
) -> None:
    reference = XROAD / "asic" / "verifier" / "valid-batch-ts.asice"
    if not reference.exists():
        pytest.skip("reference container valid-batch-ts.asice is absent")
    ids = [
        await message_log.append(record(f"q-{n}", sig), NOW)
        for n, sig in enumerate(signatures(3))
    ]
    async with aiohttp.ClientSession() as session:
        await timestamper(message_log, session, counting.url, tsa).stamp_pending()

    stored = await message_log.get(ids[2])
    assert stored is not None
    data = build_record_container(stored)
    ours = [i.filename for i in zipfile.ZipFile(io.BytesIO(data)).infolist()]
    theirs = [i.filename for i in zipfile.ZipFile(reference).infolist()]
    assert ours == theirs
    container = parse_asic(data)
    assert container.timestamp == stored.timestamp_token
    assert container.ts_hash_chain_result == stored.timestamp_hash_chain_result
    assert container.ts_hash_chain == stored.timestamp_hash_chain
    result = etree.fromstring(container.ts_hash_chain_result)
    assert result.get("URI") == "/ts-hashchain.xml#STEP0"


async def test_unreadable_signature_stays_out_of_the_batch(
    message_log: MessageLog, counting: CountingTSA, tsa
) -> None:
    good = signatures(2)
    bad_id = await message_log.append(record("bad", b"<not-a-signature/>"), NOW)
    for n, sig in enumerate(good):
        await message_log.append(record(f"good-{n}", sig), NOW)
    async with aiohttp.ClientSession() as session:
        stamper = timestamper(message_log, session, counting.url, tsa)
        assert await stamper.stamp_pending() == 2

    assert [r.id for r in await message_log.unstamped()] == [bad_id]
    assert len(counting.requests) == 1
    assert "MalformedSignature" in (stamper.last_error or "")
    # A record we cannot stamp does not start the TSA failure period.
    assert stamper.failing_since is None


async def test_tsa_down_stores_nothing(message_log: MessageLog, tsa) -> None:
    for n, sig in enumerate(signatures(3)):
        await message_log.append(record(f"q-{n}", sig), NOW)
    async with aiohttp.ClientSession() as session:
        stamper = timestamper(message_log, session, dead_url(), tsa)
        assert await stamper.stamp_pending() == 0

    assert len(await message_log.unstamped()) == 3
    assert stamper.failing_since == NOW
    assert "TSA" in (stamper.last_error or "")


async def test_batch_store_is_all_or_nothing(message_log: MessageLog) -> None:
    first, second = signatures(2)
    one = await message_log.append(record("q-1", first), NOW)
    two = await message_log.append(record("q-2", second), NOW)
    await message_log.set_timestamp(two, second, b"single-token", NOW)

    with pytest.raises(LoggingFailed) as caught:
        await message_log.set_batch_timestamp(
            [BatchStamp(one, b"<c1/>"), BatchStamp(two, b"<c2/>")],
            b"batch-token",
            b"<result/>",
            NOW,
        )
    assert caught.value.code == "LoggingFailed"
    assert [r.id for r in await message_log.unstamped()] == [one]
    stored = await message_log.get(two)
    assert stored is not None and not stored.batch_timestamp
    assert stored.timestamp_token == b"single-token"


# -- single ------------------------------------------------------------------------


async def test_single_record_still_embeds_its_token(
    message_log: MessageLog, counting: CountingTSA, tsa
) -> None:
    (original,) = signatures(1)
    record_id = await message_log.append(record("q-1", original), NOW)
    async with aiohttp.ClientSession() as session:
        stamper = timestamper(message_log, session, counting.url, tsa)
        assert await stamper.stamp_pending() == 1

    stored = await message_log.get(record_id)
    assert stored is not None and not stored.batch_timestamp
    assert stored.timestamp_hash_chain is None
    assert stored.timestamp_hash_chain_result is None
    root = etree.fromstring(stored.signature)
    properties = root.find(f".//{{{XADES_NS}}}UnsignedSignatureProperties")
    assert properties is not None
    assert etree.QName(properties[0]).localname == "SignatureTimeStamp"
    assert base64.b64decode(properties[0][0].text) == stored.timestamp_token
    value = signature_value(original)
    assert imprint_of(counting.requests[0]) == sha512(value)
    assert parse_asic(build_record_container(stored)).timestamp is None


async def test_batching_off_costs_one_request_per_record(
    message_log: MessageLog, counting: CountingTSA, tsa
) -> None:
    for n, sig in enumerate(signatures(3)):
        await message_log.append(record(f"q-{n}", sig), NOW)
    async with aiohttp.ClientSession() as session:
        stamper = timestamper(message_log, session, counting.url, tsa, batch=False)
        assert await stamper.stamp_pending() == 3
    assert len(counting.requests) == 3
    assert all(not r.batch_timestamp for r in await message_log.find())


async def test_stamp_now_stamps_one_record(
    message_log: MessageLog, counting: CountingTSA, tsa
) -> None:
    first, second = signatures(2)
    await message_log.append(record("q-1", first), NOW)
    two = await message_log.append(record("q-2", second), NOW)
    async with aiohttp.ClientSession() as session:
        stamper = timestamper(message_log, session, counting.url, tsa)
        await stamper.stamp_now(two)
        await stamper.stamp_now(two)  # already stamped: nothing to do

    assert len(counting.requests) == 1
    assert len(await message_log.unstamped()) == 1
    stored = await message_log.get(two)
    assert stored is not None and stored.timestamp_token is not None
    assert not stored.batch_timestamp


async def test_stamp_now_raises_when_the_tsa_is_down(
    message_log: MessageLog, tsa
) -> None:
    (sig,) = signatures(1)
    record_id = await message_log.append(record("q-1", sig), NOW)
    async with aiohttp.ClientSession() as session:
        stamper = timestamper(message_log, session, dead_url(), tsa)
        with pytest.raises(TimestampError) as caught:
            await stamper.stamp_now(record_id)
    assert caught.value.code == "TimestamperFailed"
    assert stamper.failing_since == NOW
    assert [r.id for r in await message_log.unstamped()] == [record_id]


# -- schema migration --------------------------------------------------------------

# The message_record table as the first release created it.
_OLD_SCHEMA = """CREATE TABLE message_record (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL DEFAULT 'm',
    time INTEGER NOT NULL, query_id TEXT NOT NULL, x_request_id TEXT NOT NULL,
    response INTEGER NOT NULL, instance TEXT NOT NULL, member_class TEXT NOT NULL,
    member_code TEXT NOT NULL, subsystem_code TEXT, client TEXT NOT NULL,
    service_provider TEXT NOT NULL, service_code TEXT NOT NULL, service_version TEXT,
    message BLOB NOT NULL, signature BLOB NOT NULL, signature_hash TEXT NOT NULL,
    hash_chain_result BLOB, hash_chain BLOB, rest INTEGER NOT NULL,
    timestamp_token BLOB, stamped_at INTEGER, timestamp_record INTEGER,
    archived INTEGER NOT NULL DEFAULT 0)"""


async def test_an_old_log_gains_the_batch_columns(tmp_path: Path) -> None:
    path = tmp_path / "messagelog.db"
    with sqlite3.connect(path) as conn:
        conn.execute(_OLD_SCHEMA)
        conn.execute(
            "INSERT INTO message_record (time, query_id, x_request_id, response,"
            " instance, member_class, member_code, client, service_provider,"
            " service_code, message, signature, signature_hash, rest)"
            " VALUES (0, 'old', 'x', 0, 'DEV', 'COM', '4321', 'DEV/COM/4321',"
            " 'DEV/COM/1234/PROV', 'getRandom', x'00', x'00', 'AA==', 0)"
        )
    conn.close()

    log = MessageLog.open(path)
    try:
        (old,) = await log.find()
        assert old.query_id == "old" and old.timestamp_record_id is None
        assert [r.query_id for r in await log.unstamped()] == ["old"]
        stamp_id = await log.set_batch_timestamp(
            [BatchStamp(old.id, b"<chain/>")], b"token", b"<result/>", NOW
        )
        stored = await log.get(old.id)
    finally:
        log.close()
    assert stored is not None and stored.timestamp_record_id == stamp_id
    assert stored.timestamp_token == b"token"
    assert stored.timestamp_hash_chain == b"<chain/>"
    assert stored.timestamp_hash_chain_result == b"<result/>"
