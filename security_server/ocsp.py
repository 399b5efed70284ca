"""Net: OCSP responses for our own certificates, and the port 5577 protocol.

``OCSPCache`` fetches and refreshes responses for our auth and sign
certificates and their intermediate CAs from the responders that global
configuration lists (certificates-ocsp.md §4), verifies each one (§5) and
keeps the latest good one in memory and in a directory. The responder app
serves them to peers and ``fetch_peer_ocsp`` is its client (transport.md §4).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from localio.http import read_at_most
from protocol import pki
from protocol.errors import CertificateError, SslAuthenticationFailed, XRoadError
from protocol.globalconf import ApprovedCA, GlobalConf
from protocol.mime import MimePart, build_multipart, parse_content_type, parse_multipart
from protocol.ocsp import (
    DEFAULT_FRESHNESS_SECONDS,
    OCSP_REQUEST_TYPE,
    OCSP_RESPONSE_TYPE,
    CertValidationError,
    build_ocsp_request,
    verify_ocsp_response,
)

log = logging.getLogger(__name__)

FETCH_INTERVAL = 1200  # ocspFetchInterval default (certificates-ocsp.md §8)
RETRY_DELAY = 60  # ocsp-retry-delay default (§4)
POLL_INTERVAL = 60  # how often run() looks for responses that are due
MAX_RESPONSE_BYTES = 64 * 1024  # one OCSP response; real ones are ~2 KiB
MAX_CHAIN_DEPTH = 8
RELATED_TYPE = 'multipart/related; type="application/ocsp-response"; charset=UTF-8'

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


class OCSPResponseMissing(CertificateError):
    code = "OCSPResponseMissing"  # no fresh good response for one of our certs


class PeerOCSPFailed(SslAuthenticationFailed):
    """A peer's OCSP download (transport.md §4) failed or was incomplete."""


@dataclass(frozen=True, slots=True)
class CachedResponse:
    der: bytes
    this_update: datetime
    next_update: datetime | None
    sha1_hex: str
    sha256_hex: str

    def fresh_at(self, now: datetime, freshness_seconds: int) -> bool:
        """§5 steps 5-6 for a response we verified when it arrived."""
        if self.this_update < now - timedelta(seconds=freshness_seconds):
            return False
        return self.next_update is None or self.next_update >= now


@dataclass(frozen=True, slots=True)
class _Target:
    cert: x509.Certificate
    issuer: x509.Certificate
    ca: ApprovedCA


def _describe(der: bytes, sha1_hex: str, sha256_hex: str) -> CachedResponse:
    """Read the dates of a response already verified (or read from our cache)."""
    response = x509_ocsp.load_der_ocsp_response(der)
    single = next(iter(response.responses))
    return CachedResponse(
        der, single.this_update_utc, single.next_update_utc, sha1_hex, sha256_hex
    )


def _aia_urls(cert: x509.Certificate) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        return []
    return [
        d.access_location.value
        for d in aia.value
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


class OCSPCache:
    """Fetch, verify, keep and serve OCSP responses for our own certificates.

    :param clock: returns the current aware UTC time.
    :param conf: returns the current verified global configuration, or None.
    :param certs: returns our leaf certificates (auth + sign); intermediate CAs
        above them are found through the approved CAs and covered too.
    :param cache_dir: where responses survive a restart (one DER file each).
    """

    def __init__(
        self,
        clock: Clock,
        session: aiohttp.ClientSession,
        conf: Callable[[], GlobalConf | None],
        certs: Callable[[], list[x509.Certificate]],
        *,
        cache_dir: Path | None = None,
        fetch_interval: int = FETCH_INTERVAL,
        retry_delay: int = RETRY_DELAY,
        request_timeout: float = 10.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._session = session
        self._conf = conf
        self._certs = certs
        self._cache_dir = cache_dir
        self._fetch_interval = max(60, fetch_interval)
        self._retry_delay = retry_delay
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._sleep = sleep
        self._by_sha256: dict[str, CachedResponse] = {}
        self._sha1_to_sha256: dict[str, str] = {}
        if cache_dir is not None:
            cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._load_files(cache_dir)

    # -- lookups ------------------------------------------------------------------

    def _freshness(self) -> int:
        conf = self._conf()
        return conf.ocsp_freshness_seconds if conf else DEFAULT_FRESHNESS_SECONDS

    def get(self, cert: x509.Certificate) -> bytes | None:
        """The cached response for ``cert``, or None if absent or stale now."""
        return self.get_by_hash(pki.cert_sha256_hex(cert))

    def get_by_hash(self, cert_hash: str) -> bytes | None:
        """Look up by lower-case hex SHA-256 or SHA-1 of the certificate DER."""
        key = cert_hash.lower()
        entry = self._by_sha256.get(self._sha1_to_sha256.get(key, key))
        if entry is None or not entry.fresh_at(self._clock(), self._freshness()):
            return None
        return entry.der

    def responses_for(self, certs: list[x509.Certificate]) -> list[bytes]:
        """Fresh responses for each of ``certs``, in order.

        :raises OCSPResponseMissing: one of them has none.
        """
        out: list[bytes] = []
        for cert in certs:
            der = self.get(cert)
            if der is None:
                raise OCSPResponseMissing(
                    f"no fresh OCSP response for certificate serial {cert.serial_number:#x}"
                )
            out.append(der)
        return out

    def signing_evidence(
        self, cert: x509.Certificate
    ) -> tuple[list[bytes], list[x509.Certificate]]:
        """OCSP responses and intermediate CA certs to embed beside ``cert``.

        certificates-ocsp.md §6, own chain: the intermediates between ``cert``
        and its top CA go into ``CertificateValues`` and each certificate but
        the top CA needs a fresh response, end entity first.

        :raises OCSPResponseMissing: one of them has no fresh response.
        """
        conf = self._conf()
        chain = [cert]
        if conf is not None:
            chain = [t.cert for t in self._targets_for(conf, cert)] or chain
        return self.responses_for(chain), chain[1:]

    # -- refreshing ---------------------------------------------------------------

    def _targets(self, conf: GlobalConf) -> list[_Target]:
        """Our leaves plus each intermediate CA up to (not including) the top CA."""
        targets: dict[str, _Target] = {}
        for leaf in self._certs():
            for target in self._targets_for(conf, leaf):
                targets.setdefault(pki.cert_sha256_hex(target.cert), target)
        return list(targets.values())

    def _targets_for(self, conf: GlobalConf, leaf: x509.Certificate) -> list[_Target]:
        """``leaf`` and the intermediate CAs above it, up to the top CA."""
        ca_certs = conf.ca_certs(conf.own_instance)
        targets: list[_Target] = []
        cert = leaf
        for _ in range(MAX_CHAIN_DEPTH):
            ca = conf.approved_ca_for(cert, conf.own_instance)
            issuer = pki.find_issuer(cert, ca_certs)
            if ca is None or issuer is None:
                log.warning(
                    "ocsp no approved issuer serial=%x issuer=%s",
                    cert.serial_number,
                    cert.issuer.rfc4514_string(),
                )
                break
            targets.append(_Target(cert, issuer, ca))
            if issuer == ca.top_ca or issuer.subject == issuer.issuer:
                break
            cert = issuer
        return targets

    def _due(self, key: str, now: datetime, freshness: int) -> bool:
        entry = self._by_sha256.get(key)
        if entry is None:
            return True
        # Refetch after the fetch interval, and in any case at half the
        # freshness window, so a slow responder never lets a response go stale.
        lead = min(self._fetch_interval, freshness // 2)
        if now >= entry.this_update + timedelta(seconds=lead):
            return True
        margin = timedelta(seconds=self._retry_delay)
        return entry.next_update is not None and now >= entry.next_update - margin

    async def refresh(self, *, force: bool = False) -> bool:
        """Fetch responses that are missing or due; True when none failed."""
        conf = self._conf()
        if conf is None:
            log.warning("ocsp refresh skipped: no global configuration")
            return False

        targets = self._targets(conf)
        ok = True
        for target in targets:
            key = pki.cert_sha256_hex(target.cert)
            if force or self._due(key, self._clock(), conf.ocsp_freshness_seconds):
                ok = await self._fetch_one(conf, target) and ok
        keep = {pki.cert_sha256_hex(t.cert) for t in targets}
        self._prune(keep, self._clock(), conf.ocsp_freshness_seconds)
        return ok

    def _urls(self, target: _Target) -> list[str]:
        listed = target.ca.ocsp_for(target.issuer) or target.ca.ocsp
        urls = [info.url for info in listed] + _aia_urls(target.cert)
        return list(dict.fromkeys(u for u in urls if u))

    async def _fetch_one(self, conf: GlobalConf, target: _Target) -> bool:
        request = build_ocsp_request(target.cert, target.issuer)
        for url in self._urls(target):
            der = await self._post(url, request, target.cert)
            if der is None:
                continue
            try:
                verify_ocsp_response(
                    der,
                    target.cert,
                    target.issuer,
                    at=self._clock(),
                    freshness_seconds=conf.ocsp_freshness_seconds,
                    responder_certs=conf.ocsp_responder_certs(conf.own_instance),
                )
            except CertValidationError as err:
                # A verified answer that is not "good": the certificate must
                # not be used any more, so the earlier good answer goes too.
                self._forget(target.cert)
                log.error(
                    "certificate no longer good serial=%x status=%s",
                    target.cert.serial_number,
                    err.status,
                )
                return False
            except XRoadError as err:
                log.warning(
                    "ocsp response rejected url=%s serial=%x code=%s: %s",
                    url,
                    target.cert.serial_number,
                    err.full_code,
                    err,
                )
                continue
            self._store(target.cert, der)
            log.info("ocsp fetched url=%s serial=%x", url, target.cert.serial_number)
            return True
        log.error(
            "ocsp fetch failed for all responders serial=%x issuer=%s",
            target.cert.serial_number,
            target.cert.issuer.rfc4514_string(),
        )
        return False

    async def _post(
        self, url: str, request: bytes, cert: x509.Certificate
    ) -> bytes | None:
        headers = {"Content-Type": OCSP_REQUEST_TYPE, "Accept": OCSP_RESPONSE_TYPE}
        try:
            async with self._session.post(
                url, data=request, headers=headers, timeout=self._timeout
            ) as resp:
                if resp.status != 200:
                    log.warning(
                        "ocsp responder http status url=%s status=%d", url, resp.status
                    )
                    return None
                body = await read_at_most(resp.content, MAX_RESPONSE_BYTES)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("ocsp responder unreachable url=%s error=%r", url, exc)
            return None
        if len(body) > MAX_RESPONSE_BYTES:
            log.warning(
                "ocsp response too large url=%s serial=%x", url, cert.serial_number
            )
            return None
        return body

    async def run(self, interval: float = POLL_INTERVAL) -> None:
        """Refresh every ``interval`` seconds, backing off after failures.

        Never raises, except for cancellation.
        """
        failures = 0
        while True:
            try:
                ok = await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ocsp refresh crashed")
                ok = False
            failures = 0 if ok else failures + 1
            if failures:
                delay = min(
                    self._retry_delay * 2 ** (failures - 1), self._fetch_interval
                )
                delay = min(delay, max(interval, self._retry_delay))
            else:
                delay = interval
            await self._sleep(delay)

    # -- storage ------------------------------------------------------------------

    def _store(self, cert: x509.Certificate, der: bytes) -> None:
        sha1_hex, sha256_hex = pki.cert_sha1_hex(cert), pki.cert_sha256_hex(cert)
        self._by_sha256[sha256_hex] = _describe(der, sha1_hex, sha256_hex)
        self._sha1_to_sha256[sha1_hex] = sha256_hex
        if self._cache_dir is None:
            return
        path = self._cache_dir / f"{sha256_hex}.{sha1_hex}.der"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_bytes(der)
            tmp.replace(path)
        except OSError as exc:
            log.warning("ocsp cache file not written path=%s error=%r", path, exc)

    def _forget(self, cert: x509.Certificate) -> None:
        key = pki.cert_sha256_hex(cert)
        entry = self._by_sha256.pop(key, None)
        if entry is None:
            return
        self._sha1_to_sha256.pop(entry.sha1_hex, None)
        if self._cache_dir is not None:
            (self._cache_dir / f"{key}.{entry.sha1_hex}.der").unlink(missing_ok=True)

    def _prune(self, keep: set[str], now: datetime, freshness: int) -> None:
        # Only stale leftovers go: a momentarily empty certificate list (token
        # locked, configuration gap) must not wipe responses peers still need.
        for key in set(self._by_sha256) - keep:
            if self._by_sha256[key].fresh_at(now, freshness):
                continue
            entry = self._by_sha256.pop(key)
            self._sha1_to_sha256.pop(entry.sha1_hex, None)
            if self._cache_dir is not None:
                (self._cache_dir / f"{key}.{entry.sha1_hex}.der").unlink(
                    missing_ok=True
                )

    def _load_files(self, cache_dir: Path) -> None:
        # These files were verified before we wrote them; staleness is still
        # checked on every lookup.
        for path in cache_dir.glob("*.der"):
            sha256_hex, _, sha1_hex = path.stem.partition(".")
            try:
                entry = _describe(path.read_bytes(), sha1_hex, sha256_hex)
            except (ValueError, StopIteration, OSError) as exc:
                log.warning("ocsp cache file ignored path=%s error=%r", path, exc)
                continue
            self._by_sha256[sha256_hex] = entry
            self._sha1_to_sha256[sha1_hex] = sha256_hex


# -- port 5577: serving and fetching (transport.md §4) ----------------------------


CACHE_KEY = web.AppKey("ocsp_cache", OCSPCache)


def _error(text: str) -> web.Response:
    return web.Response(status=500, text=text)


async def _on_ocsp_request(request: web.Request) -> web.Response:
    if request.method == "HEAD":
        return web.Response(status=200)
    if request.method != "GET":
        return _error(f"method {request.method} is not supported")

    cache: OCSPCache = request.app[CACHE_KEY]
    hashes = request.query.getall("cert", []) or request.query.getall("cert_hash", [])
    if not hashes:
        return _error("no certificate hashes requested")
    parts: list[MimePart] = []
    for cert_hash in hashes:
        der = cache.get_by_hash(cert_hash)
        if der is None:
            return _error(f"no OCSP response for certificate {cert_hash}")
        parts.append(MimePart((("Content-Type", OCSP_RESPONSE_TYPE),), der))

    boundary = "xocsp" + uuid.uuid4().hex
    body = build_multipart(parts, boundary)
    headers = {"Content-Type": f"{RELATED_TYPE}; boundary={boundary}"}
    return web.Response(status=200, body=body, headers=headers)


def ocsp_responder_app(cache: OCSPCache) -> web.Application:
    """The plain-HTTP app peers query on port 5577 for our OCSP responses."""
    app = web.Application(client_max_size=64 * 1024)
    app[CACHE_KEY] = cache
    app.router.add_route("*", "/", _on_ocsp_request)
    return app


async def fetch_peer_ocsp(
    session: aiohttp.ClientSession,
    host: str,
    port: int,
    certs: list[x509.Certificate],
    *,
    timeout: float = 10.0,
) -> list[bytes]:
    """Download a peer's OCSP responses for ``certs``, in the same order.

    :raises PeerOCSPFailed: network error, non-2xx answer, or not exactly one
        ``application/ocsp-response`` part per certificate.
    """
    if not certs:
        return []
    query = [("cert", pki.cert_sha1_hex(c)) for c in certs]
    query += [("cert_hash", pki.cert_sha256_hex(c)) for c in certs]
    url = f"http://{host}:{port}/"
    limit = MAX_RESPONSE_BYTES * len(certs) + 4096
    try:
        async with session.get(
            url,
            params=query,
            headers={"Accept": "multipart/related"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            body = await read_at_most(resp.content, limit)
            status, content_type = resp.status, resp.headers.get("Content-Type")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PeerOCSPFailed(
            f"OCSP download from {host}:{port} failed: {exc!r}"
        ) from exc

    if not 200 <= status < 300:
        raise PeerOCSPFailed(f"OCSP download from {host}:{port} answered {status}")
    if len(body) > limit:
        raise PeerOCSPFailed(f"OCSP download from {host}:{port} is too large")
    return _parse_related(body, content_type, len(certs), f"{host}:{port}")


def _parse_related(
    body: bytes, content_type: str | None, expected: int, peer: str
) -> list[bytes]:
    try:
        mime_type, params = parse_content_type(content_type)
        if not mime_type.startswith("multipart/") or "boundary" not in params:
            raise PeerOCSPFailed(f"OCSP download from {peer} is {content_type!r}")
        parts = parse_multipart(body, params["boundary"])
    except PeerOCSPFailed:
        raise
    except XRoadError as err:
        raise PeerOCSPFailed(f"OCSP download from {peer} is malformed: {err}") from err
    if len(parts) != expected:
        raise PeerOCSPFailed(
            f"OCSP download from {peer} has {len(parts)} responses, expected {expected}"
        )
    for part in parts:
        try:
            mime = part.mime_type
        except XRoadError:
            mime = None
        if mime != OCSP_RESPONSE_TYPE:
            raise PeerOCSPFailed(f"OCSP download from {peer} has a {mime!r} part")
    return [p.body for p in parts]
