"""The TSA goes down: traffic goes on for the acceptable period, then stops, then resumes."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import aiohttp
import pytest
from aiohttp import web
from lxml import etree

from demo.ecosystem import HOST, Ecosystem
from demo.story import soap_example
from timestamp.tsa import TimestampAuthority, tsa_app

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

PERIOD = 60  # seconds of failed time-stamping tolerated in this test


async def call(ecosystem: Ecosystem, query_id: str) -> str:
    """Make one SOAP call; return the fault code, or "" for an answer."""
    async with aiohttp.ClientSession() as session:
        async with session.post(
            ecosystem.client_proxy_url + "/",
            data=soap_example(query_id),
            headers={"Content-Type": "text/xml; charset=UTF-8"},
        ) as response:
            body = await response.read()
    fault = etree.fromstring(body).find(
        ".//{http://schemas.xmlsoap.org/soap/envelope/}Fault"
    )
    return "" if fault is None else fault.findtext("faultcode") or "?"


async def stamp_everything(ecosystem: Ecosystem) -> None:
    for server in (ecosystem.agency_server, ecosystem.register_server):
        await server.runtime.timestamper.stamp_pending()


async def test_traffic_stops_after_the_failure_period_and_resumes(
    ecosystem: Ecosystem, clock
) -> None:
    for server in (ecosystem.agency_server, ecosystem.register_server):
        runtime = server.runtime
        runtime.settings = dataclasses.replace(
            runtime.settings, timestamp_failure_period_seconds=PERIOD
        )
    assert await call(ecosystem, "tsa-up") == ""

    await ecosystem.tsa_runner.cleanup()  # the TSA goes down
    assert await call(ecosystem, "tsa-down-1") == ""  # still within the period
    await stamp_everything(ecosystem)
    agency = ecosystem.agency_server.runtime
    assert agency.timestamper.failing_since is not None
    assert await agency.message_log.unstamped()

    clock.offset = timedelta(seconds=PERIOD + 5)
    try:
        code = await call(ecosystem, "tsa-down-2")
        assert code == "Server.ClientProxy.LoggingFailed.TimestamperFailed"

        tsa = TimestampAuthority.open(ecosystem.directory / "tsa")
        runner = web.AppRunner(tsa_app(tsa, clock))
        await runner.setup()
        await web.TCPSite(runner, HOST, ecosystem.ports["tsa"]).start()
        ecosystem.tsa_runner = runner  # the TSA is back
        await stamp_everything(ecosystem)

        assert agency.timestamper.failing_since is None
        assert await agency.message_log.unstamped() == []
        assert await ecosystem.register_server.runtime.message_log.unstamped() == []
        assert await call(ecosystem, "tsa-back") == ""
    finally:
        clock.offset = timedelta()
