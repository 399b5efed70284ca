"""End to end: batch time-stamps and timestamp-immediately on both servers.

Several SOAP and REST exchanges are logged while the timestampers wait, one
round per server then covers them with ONE token each; every exported
container must verify like an auditor's against the server's own
``globalconf/``. With timestamp-immediately on, the records are stamped before
the answer comes back, and a TSA outage fails the exchange.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import aiohttp
import pytest
from lxml import etree

from demo.ecosystem import (
    BENEFITS_SUBSYSTEM,
    REGISTRY_SUBSYSTEM,
    Ecosystem,
    wait_for_timestamps,
)
from demo.story import Answers, make_calls, soap_example
from protocol.auditor import verify_container
from protocol.globalconf import GlobalConf
from security_server.confclient import load_conf_dir
from security_server.logexport import RecordQuery, export_containers
from security_server.server import SecurityServer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SOAP_ENV = "{http://schemas.xmlsoap.org/soap/envelope/}"


def _servers(ecosystem: Ecosystem) -> tuple[SecurityServer, SecurityServer]:
    return ecosystem.agency_server, ecosystem.register_server


def _conf(server: SecurityServer) -> GlobalConf:
    return load_conf_dir(Path(server.directory) / "globalconf")


async def _soap_fault(ecosystem: Ecosystem, query_id: str) -> str:
    """Make one SOAP call; return its fault code, or "" for an answer."""
    async with aiohttp.ClientSession() as session:
        async with session.post(
            ecosystem.client_proxy_url + "/",
            data=soap_example(query_id),
            headers={"Content-Type": "text/xml; charset=UTF-8"},
        ) as response:
            body = await response.read()
    fault = etree.fromstring(body).find(f".//{SOAP_ENV}Fault")
    return "" if fault is None else fault.findtext("faultcode") or "?"


async def test_batched_exchanges_export_and_verify(ecosystem: Ecosystem) -> None:
    await wait_for_timestamps(ecosystem)
    agency, register = _servers(ecosystem)
    runtimes = [server.runtime for server in (agency, register)]
    assert all(runtime is not None for runtime in runtimes)

    # Holding each timestamper's round lock keeps its background task from
    # stamping while the exchanges are logged, so the records pile up.
    answers: list[Answers] = []
    for runtime in runtimes:
        runtime.timestamper.batch = True  # type: ignore[union-attr]
        await runtime.timestamper._round.acquire()  # type: ignore[union-attr]
    try:
        for _ in range(3):
            answers.append(await make_calls(ecosystem))
    finally:
        for runtime in runtimes:
            runtime.timestamper._round.release()  # type: ignore[union-attr]
    assert all(a.soap_status == a.rest_status == 200 for a in answers)
    query_ids = [q for a in answers for q in (a.soap_query_id, a.rest_query_id)]

    # The background rounds, woken by the appends, now take all that piled up.
    await wait_for_timestamps(ecosystem)
    for server in (agency, register):
        runtime = server.runtime
        assert runtime is not None
        stamp_ids = set()
        for query_id in query_ids:
            for record in await runtime.message_log.find(query_id):
                assert record.batch_timestamp, (server.directory, record.id)
                stamp_ids.add(record.timestamp_record_id)
        # One TSA request covered all twelve (6 exchanges x request + response).
        assert len(stamp_ids) == 1

        conf = _conf(server)
        verified = 0
        for query_id in query_ids:
            exported = await export_containers(
                runtime.message_log, RecordQuery(query_id=query_id)
            )
            assert len(exported) == 2
            for name, data in exported:
                verdict = verify_container(data, conf)
                assert verdict.batch_timestamp, name
                assert verdict.report().startswith("Verification successful.")
                signer = (
                    BENEFITS_SUBSYSTEM if "-request-" in name else REGISTRY_SUBSYSTEM
                )
                assert verdict.signer == signer, name
                verified += 1
        assert verified == 12


async def test_timestamp_immediately_stamps_before_answering(
    ecosystem: Ecosystem,
) -> None:
    await wait_for_timestamps(ecosystem)
    for server in _servers(ecosystem):
        runtime = server.runtime
        assert runtime is not None
        runtime.settings = dataclasses.replace(
            runtime.settings, timestamp_immediately=True
        )
        runtime.timestamper.notify = lambda: None  # type: ignore[method-assign]

    assert await _soap_fault(ecosystem, "immediately-1") == ""

    for server in _servers(ecosystem):
        runtime = server.runtime
        assert runtime is not None
        records = await runtime.message_log.find("immediately-1")
        assert [r.response for r in records] == [False, True]
        for record in records:
            assert record.timestamp_token is not None and not record.batch_timestamp
        (_, data), _ = await export_containers(
            runtime.message_log, RecordQuery(query_id="immediately-1")
        )
        assert not verify_container(data, _conf(server)).batch_timestamp


async def test_timestamp_immediately_fails_the_exchange_without_a_tsa(
    ecosystem: Ecosystem,
) -> None:
    agency = ecosystem.agency_server.runtime
    assert agency is not None and agency.settings.timestamp_immediately
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    working = agency.timestamper.tsa_sources
    agency.timestamper.tsa_sources = lambda: [(dead, cert) for _, cert in working()]
    try:
        code = await _soap_fault(ecosystem, "immediately-down")
    finally:
        agency.timestamper.tsa_sources = working
    assert code == "Server.ClientProxy.LoggingFailed.TimestamperFailed"
    (logged,) = await agency.message_log.find("immediately-down")
    assert logged.timestamp_token is None  # kept for a later round

    assert await _soap_fault(ecosystem, "immediately-back") == ""
    assert agency.timestamper.failing_since is None
