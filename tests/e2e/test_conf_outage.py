"""The configuration source goes down past expiry, then comes back: service recovers."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
import pytest
from lxml import etree

from central_server.service import CentralServer
from demo.ecosystem import HOST, Ecosystem
from demo.story import soap_example

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


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


async def refresh(ecosystem: Ecosystem) -> list[BaseException | None]:
    """Each server tries one download now; return what went wrong, if anything."""
    outcomes: list[BaseException | None] = []
    for server in (ecosystem.agency_server, ecosystem.register_server):
        try:
            await server.runtime.conf_client.download()
            outcomes.append(None)
        except Exception as exc:  # noqa: BLE001 - the outcome is what we test
            outcomes.append(exc)
    return outcomes


async def test_expired_configuration_refuses_then_recovers_without_restart(
    ecosystem: Ecosystem, clock
) -> None:
    assert await call(ecosystem, "conf-up") == ""
    await ecosystem.central.stop()  # the configuration source goes down
    try:
        clock.offset = timedelta(minutes=11)  # past the 10-minute expiry
        assert all(outcome is not None for outcome in await refresh(ecosystem))
        assert await call(ecosystem, "conf-expired") == (
            "Server.ClientProxy.OutdatedGlobalConf"
        )

        central = CentralServer(
            ecosystem.central.dir,
            host=HOST,
            conf_port=ecosystem.ports["central_conf"],
            ocsp_port=ecosystem.ports["central_ocsp"],
            clock=clock,
        )
        await central.start()  # back, publishing a fresh configuration
        ecosystem.central = central
        for server in (ecosystem.agency_server, ecosystem.register_server):
            await server.runtime.ocsp.refresh(force=True)
        assert await refresh(ecosystem) == [None, None]
        assert await call(ecosystem, "conf-back") == ""
    finally:
        clock.offset = timedelta()
