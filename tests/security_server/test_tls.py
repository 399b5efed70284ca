from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from protocol.errors import SslAuthenticationFailed
from security_server import tls

from . import Issued, auth_cert, issue

CA1 = issue("CA1", ca=True)
INT1 = issue("INT1", CA1, ca=True)
CA2 = issue("CA2", ca=True)
SERVER = auth_cert("server", CA1)
SERVER_RSA = auth_cert("server-rsa", CA1, rsa_key=True)
CLIENT1 = auth_cert("client1", INT1)
CLIENT2 = auth_cert("client2", CA2)


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


class Server:
    def __init__(self) -> None:
        self.calls: list[tuple[str | None, list[str]]] = []
        self.swapper = tls.TrustSwapper(SERVER.key, [SERVER.cert], [CA1.cert])
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        leaf = tls.peer_certificate(request)
        chain = [cn(c) for c in tls.peer_chain(request)]
        self.calls.append((cn(leaf) if leaf else None, chain))
        return web.Response(text="ok")


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_get("/", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=srv.swapper.context)
    await site.start()
    srv.port = runner.addresses[0][1]
    yield srv
    await runner.cleanup()


async def call(
    srv: Server, client: Issued, chain: list[x509.Certificate], check: tls.PeerCheck
) -> str:
    ctx = tls.client_context(client.key, [client.cert, *chain])
    connector = tls.CheckingConnector(check, ssl=ctx, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"https://127.0.0.1:{srv.port}/") as resp:
            return await resp.text()


def recorder(seen: list[tuple[bytes, list[bytes]]]) -> tls.PeerCheck:
    def check(leaf: bytes, chain: list[bytes]) -> None:
        seen.append((leaf, chain))

    return check


@pytest.mark.asyncio
async def test_mutual_tls_with_partial_chain(server: Server) -> None:
    seen: list[tuple[bytes, list[bytes]]] = []

    assert await call(server, CLIENT1, [INT1.cert], recorder(seen)) == "ok"

    assert server.calls == [("client1", ["client1", "INT1"])]
    leaf, chain = seen[0]
    assert x509.load_der_x509_certificate(leaf) == SERVER.cert
    assert chain[0] == leaf


@pytest.mark.asyncio
async def test_partial_chain_with_intermediate_as_only_anchor(server: Server) -> None:
    server.swapper.update(SERVER.key, [SERVER.cert], [INT1.cert])

    assert await call(server, CLIENT1, [INT1.cert], recorder([])) == "ok"


@pytest.mark.asyncio
async def test_client_from_other_ca_is_rejected_at_handshake(server: Server) -> None:
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        await call(server, CLIENT2, [], recorder([]))

    assert server.calls == []


@pytest.mark.asyncio
async def test_listener_on_current_context_also_swaps(server: Server) -> None:
    # A listener started with swapper.current (the first context) follows
    # later updates too: every context the swapper builds carries the hook.
    first = server.swapper.current
    server.swapper.update(SERVER.key, [SERVER.cert], [CA2.cert])

    assert server.swapper.current is not first
    assert first.sni_callback is not None
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        await call(server, CLIENT1, [INT1.cert], recorder([]))


@pytest.mark.asyncio
async def test_failing_async_check_stops_request(server: Server) -> None:
    failure = SslAuthenticationFailed("provider auth cert is not registered")

    async def check(leaf: bytes, chain: list[bytes]) -> None:
        raise failure

    with pytest.raises(SslAuthenticationFailed) as info:
        await call(server, CLIENT1, [INT1.cert], check)

    assert info.value is failure
    assert server.calls == []


@pytest.mark.asyncio
async def test_trust_swap_takes_effect_on_next_handshake(server: Server) -> None:
    assert await call(server, CLIENT1, [INT1.cert], recorder([])) == "ok"

    server.swapper.update(SERVER_RSA.key, [SERVER_RSA.cert], [CA2.cert])

    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        await call(server, CLIENT1, [INT1.cert], recorder([]))
    seen: list[tuple[bytes, list[bytes]]] = []
    assert await call(server, CLIENT2, [], recorder(seen)) == "ok"
    assert x509.load_der_x509_certificate(seen[0][0]) == SERVER_RSA.cert
    assert [c[0] for c in server.calls] == ["client1", "client2"]


def test_contexts_pin_tls12_and_suites() -> None:
    server_ctx = tls.server_context(SERVER.key, [SERVER.cert], [CA1.cert])
    client_ctx = tls.client_context(CLIENT1.key, [CLIENT1.cert, INT1.cert])

    for ctx in (server_ctx, client_ctx):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.maximum_version == ssl.TLSVersion.TLSv1_2
        names = {c["name"] for c in ctx.get_ciphers()}
        assert "ECDHE-RSA-AES256-SHA384" in names
        assert "ECDHE-ECDSA-AES256-SHA384" in names
        assert "ECDHE-RSA-AES128-GCM-SHA256" not in names
    assert server_ctx.verify_mode == ssl.CERT_REQUIRED
    assert server_ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert client_ctx.verify_mode == ssl.CERT_NONE
    assert not client_ctx.check_hostname


def test_key_dir_loading_leaves_no_file(tmp_path: Path) -> None:
    ctx = tls.server_context(SERVER.key, [SERVER.cert], [CA1.cert], key_dir=tmp_path)

    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert list(tmp_path.iterdir()) == []


def test_connector_still_overrides_private_hook() -> None:
    # An aiohttp upgrade that renames the hook must fail loudly here.
    assert hasattr(aiohttp.TCPConnector, "_create_connection")
    assert "_create_connection" in tls.CheckingConnector.__dict__
