"""Net: TLS contexts between security servers (transport.md §3).

Handshake trust is deliberately loose; identity is checked at the application
level. The provider side requires a client certificate from an approved CA and
can swap its trust store and own certificate at run time through
``sni_callback`` (LIBRARIES.md §3). The consumer side accepts any chain and
runs an application check after the handshake, before any request byte.
"""

from __future__ import annotations

import _ssl
import inspect
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from protocol.errors import InternalError, SslAuthenticationFailed

log = logging.getLogger(__name__)

# transport.md §3, in order of preference. DHE needs DH parameters, which the
# stdlib can load only from a file; the server side leaves it out.
CLIENT_CIPHERS = (
    "ECDHE-RSA-AES256-SHA384:DHE-RSA-AES256-SHA256:ECDHE-ECDSA-AES256-SHA384"
)
SERVER_CIPHERS = "ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES256-SHA384"

PeerCheck = Callable[[bytes, list[bytes]], Awaitable[None] | None]

# Pipes hold at least 4 KiB on every POSIX system and 64 KiB on Linux; a key
# plus a short chain is far below that, so a single blocking write cannot stall.
_PIPE_LIMIT = 4096 * 15


def _base_context(purpose: ssl.Purpose, ciphers: str) -> ssl.SSLContext:
    side = (
        ssl.PROTOCOL_TLS_SERVER
        if purpose is ssl.Purpose.CLIENT_AUTH
        else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    # Resumed sessions skip certificate verification; after a trust swap a
    # ticket issued under the old trust must not be honoured.
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def _pem_chain(chain: Sequence[x509.Certificate]) -> bytes:
    if not chain:
        raise InternalError(
            "TLS identity needs at least the authentication certificate"
        )
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def _pem_key(key: PrivateKeyTypes, password: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _load_via_pipes(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    fds: list[int] = []
    try:
        cert_r, cert_w = os.pipe()
        fds += [cert_r, cert_w]
        key_r, key_w = os.pipe()
        fds += [key_r, key_w]
        os.write(cert_w, cert_pem)
        os.write(key_w, key_pem)
        os.close(cert_w)
        os.close(key_w)
        fds = [cert_r, key_r]
        ctx.load_cert_chain(f"/dev/fd/{cert_r}", f"/dev/fd/{key_r}")
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _load_via_file(
    ctx: ssl.SSLContext, cert_pem: bytes, key: PrivateKeyTypes, key_dir: Path
) -> None:
    # The file exists for a moment only, is mode 0600 (mkstemp) and holds the
    # key encrypted under a one-time password that never touches the disk.
    password = os.urandom(32).hex().encode("ascii")
    fd, name = tempfile.mkstemp(prefix=".tls-", suffix=".pem", dir=key_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert_pem)
            handle.write(_pem_key(key, password))
        ctx.load_cert_chain(name, password=password)
    finally:
        os.unlink(name)


def load_identity(
    ctx: ssl.SSLContext,
    key: PrivateKeyTypes,
    chain: Sequence[x509.Certificate],
    *,
    key_dir: Path | None = None,
) -> None:
    """Load our key and certificate chain (leaf first) into ``ctx`` from memory.

    ``load_cert_chain`` only reads files. Without ``key_dir`` the PEM goes
    through anonymous pipes (``/dev/fd``); with it, through a short-lived 0600
    file inside that directory, never a world-readable temp dir.
    """
    cert_pem = _pem_chain(chain)
    try:
        if key_dir is not None:
            _load_via_file(ctx, cert_pem, key, key_dir)
            return
        key_pem = _pem_key(key, None)
        if not os.path.isdir("/dev/fd") or len(cert_pem) + len(key_pem) > _PIPE_LIMIT:
            raise InternalError("loading a TLS key from memory needs key_dir here")
        _load_via_pipes(ctx, cert_pem, key_pem)
    except ssl.SSLError as exc:
        raise InternalError(f"TLS key and certificate do not load: {exc}") from exc


def _trust_data(trusted: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in trusted)


def server_context(
    auth_key: PrivateKeyTypes,
    auth_chain: list[x509.Certificate],
    trusted: list[x509.Certificate],
    *,
    key_dir: Path | None = None,
) -> ssl.SSLContext:
    """Build the provider-side context: TLS 1.2, client certificate required.

    ``trusted`` are the approved CA certificates; any of them, top or
    intermediate, may anchor the client's chain (VERIFY_X509_PARTIAL_CHAIN).
    """
    ctx = _base_context(ssl.Purpose.CLIENT_AUTH, SERVER_CIPHERS)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if trusted:
        ctx.load_verify_locations(cadata=_trust_data(trusted))
    load_identity(ctx, auth_key, auth_chain, key_dir=key_dir)
    return ctx


def client_context(
    auth_key: PrivateKeyTypes,
    auth_chain: list[x509.Certificate],
    *,
    key_dir: Path | None = None,
) -> ssl.SSLContext:
    """Build the consumer-side context: TLS 1.2, presents our auth chain.

    Any server chain is accepted here on purpose (transport.md §3): the
    provider is identified through global configuration by the caller's
    check (see :class:`CheckingConnector`), never by DNS names.
    """
    ctx = _base_context(ssl.Purpose.SERVER_AUTH, CLIENT_CIPHERS)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    load_identity(ctx, auth_key, auth_chain, key_dir=key_dir)
    return ctx


class TrustSwapper:
    """Own the listener context and replace trust and identity at run time.

    ``context`` is given to the listener once. Every handshake runs its
    ``sni_callback`` (with or without SNI), which moves the connection onto
    the newest context, so ``update`` takes effect on the next handshake.
    """

    def __init__(
        self,
        auth_key: PrivateKeyTypes,
        auth_chain: list[x509.Certificate],
        trusted: list[x509.Certificate],
        *,
        key_dir: Path | None = None,
    ) -> None:
        self._key_dir = key_dir
        self._lock = threading.Lock()
        self._current = self._build(auth_key, auth_chain, trusted)
        #: The context to give the listener. Every context this class builds
        #: carries the callback, so a listener started on ``current`` swaps too.
        self.context = self._current

    def update(
        self,
        auth_key: PrivateKeyTypes,
        auth_chain: list[x509.Certificate],
        trusted: list[x509.Certificate],
    ) -> None:
        """Use a new key, chain and trusted CA set from the next handshake on."""
        fresh = self._build(auth_key, auth_chain, trusted)
        with self._lock:
            self._current = fresh
        log.info("tls trust updated trusted=%d", len(trusted))

    def _build(
        self,
        auth_key: PrivateKeyTypes,
        auth_chain: list[x509.Certificate],
        trusted: list[x509.Certificate],
    ) -> ssl.SSLContext:
        ctx = server_context(auth_key, auth_chain, trusted, key_dir=self._key_dir)
        ctx.sni_callback = self._on_hello
        return ctx

    @property
    def current(self) -> ssl.SSLContext:
        """The newest context (what the next handshake will use)."""
        with self._lock:
            return self._current

    def _on_hello(
        self, ssl_object: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext
    ) -> None:
        newest = self.current
        if ctx is not newest:
            ssl_object.context = newest
        return None


def _chain_der(ssl_object: Any) -> list[bytes]:
    """The peer's chain as sent, leaf first, or [] where Python cannot tell."""
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        # TODO(py3.13): the public SSLObject.get_unverified_chain() replaces
        # this private 3.10-3.12 fallback (LIBRARIES.md §3).
        inner = getattr(ssl_object, "_sslobj", None)
        getter = getattr(inner, "get_unverified_chain", None)
    if getter is None:
        return []
    chain = getter() or []
    out: list[bytes] = []
    for cert in chain:
        if isinstance(cert, bytes):
            out.append(cert)
        else:
            out.append(cert.public_bytes(_ssl.ENCODING_DER))
    return out


def ssl_peer(ssl_object: Any) -> tuple[bytes | None, list[bytes]]:
    """Return (leaf DER, chain DER leaf first) of the peer of ``ssl_object``."""
    if ssl_object is None:
        return None, []
    leaf = ssl_object.getpeercert(binary_form=True)
    if not leaf:
        return None, []
    chain = _chain_der(ssl_object)
    if not chain or chain[0] != leaf:
        chain = [leaf, *(c for c in chain if c != leaf)]
    return leaf, chain


def peer_certificate(request: web.Request) -> x509.Certificate | None:
    """Return the TLS client certificate of ``request``, or None on plain HTTP."""
    transport = request.transport
    if transport is None:
        return None
    leaf, _ = ssl_peer(transport.get_extra_info("ssl_object"))
    return x509.load_der_x509_certificate(leaf) if leaf else None


def peer_chain(request: web.Request) -> list[x509.Certificate]:
    """Return the chain the TLS client sent, leaf first ([] on plain HTTP)."""
    transport = request.transport
    if transport is None:
        return []
    _, chain = ssl_peer(transport.get_extra_info("ssl_object"))
    return [x509.load_der_x509_certificate(der) for der in chain]


class CheckingConnector(aiohttp.TCPConnector):
    """A connector that vets the server's certificate before sending a byte.

    ``check(leaf_der, chain_der)`` runs right after the TLS handshake; if it
    raises, the connection is closed and the error propagates unchanged to the
    caller of ``session.request``. Pooled keep-alive connections are reused
    without a new check, so use one connector per expected peer identity (or
    ``force_close=True``) when the check depends on the request.

    This overrides aiohttp's private ``_create_connection`` (LIBRARIES.md §3);
    tests/security_server/test_tls.py pins the behaviour.
    """

    def __init__(self, check: PeerCheck, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._check = check

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        proto = await super()._create_connection(req, traces, timeout)
        transport = proto.transport
        try:
            ssl_object = transport.get_extra_info("ssl_object") if transport else None
            leaf, chain = ssl_peer(ssl_object)
            if leaf is None:
                raise SslAuthenticationFailed(
                    f"no TLS peer certificate from {req.url.host!r}"
                )
            outcome = self._check(leaf, chain)
            if inspect.isawaitable(outcome):
                await outcome
        except BaseException:
            proto.close()
            raise
        return proto
