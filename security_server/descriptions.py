"""Net + store: register services from a WSDL or an OpenAPI 3 document.

Fetch the description (an http(s) URL with a timeout and a size limit, or a
local file), parse it with :mod:`protocol.servicedesc`, then add the services
to ``serverconf.db`` in one transaction: on any error nothing is registered.
The description's location is stored with each service, as metaservices.md
§4 and §6 need it later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import aiohttp

from protocol.errors import (
    HttpError,
    InvalidRequest,
    NetworkError,
    ServiceMissingUrl,
    UnknownMember,
    XRoadIOError,
)
from protocol.identifiers import ClientId, ServiceId
from protocol.servicedesc import (
    DescriptionTooLarge,
    DuplicateService,
    OpenApiEndpoint,
    UnsupportedDescriptionSource,
    WsdlOperation,
    check_identifier,
    parse_openapi,
    parse_wsdl,
)

from .serverconf import ServerConf, ServiceConfig, ServiceKind

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
MAX_DESCRIPTION_SIZE = 10 * 1024 * 1024
SERVICE_TIMEOUT = 60
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FetchedDescription:
    """The bytes of a description and where they came from."""

    data: bytes
    location: str  # stored as the service's description URL
    format_hint: str  # a media type or a file name, for parse_openapi
    content_type: str | None = None  # as the server sent it; None for a file


# -- fetching ------------------------------------------------------------------


async def fetch_description(
    source: str,
    session: aiohttp.ClientSession | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_size: int = MAX_DESCRIPTION_SIZE,
) -> FetchedDescription:
    """Read a description from an http(s) URL, a ``file:`` URL or a file path.

    Redirects are not followed (rest-message.md §8 advises against it).

    :raises UnsupportedDescriptionSource: another URL scheme.
    :raises DescriptionTooLarge: more than ``max_size`` bytes.
    :raises NetworkError: connection failure or timeout.
    :raises HttpError: an answer other than 200.
    :raises XRoadIOError: the file cannot be read.
    """
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if session is None:
            async with aiohttp.ClientSession() as own_session:
                return await _fetch_url(own_session, source, timeout, max_size)
        return await _fetch_url(session, source, timeout, max_size)
    if scheme == "file":
        path = Path(unquote(parts.path))
    elif scheme == "" or len(scheme) == 1:  # a plain path, or a drive letter
        path = Path(source)
    else:
        raise UnsupportedDescriptionSource(
            f"cannot read a description from {source!r}; use http(s) or a file"
        )
    data = await asyncio.to_thread(_read_file, path, max_size)
    log.info("service description read path=%s bytes=%d", path, len(data))
    return FetchedDescription(data, path.resolve().as_uri(), path.name)


async def _fetch_url(
    session: aiohttp.ClientSession, url: str, timeout: float, max_size: int
) -> FetchedDescription:
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with session.get(
            url, timeout=client_timeout, allow_redirects=False
        ) as response:
            if response.status != 200:
                raise HttpError(f"GET {url!r} answered HTTP {response.status}")
            if (response.content_length or 0) > max_size:
                raise DescriptionTooLarge(
                    f"{url!r} announces {response.content_length} bytes; "
                    f"the limit is {max_size}"
                )
            data = await _read_limited(response, url, max_size)
            content_type = response.headers.get("Content-Type", "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NetworkError(f"GET {url!r} failed: {exc!r}") from exc

    log.info("service description fetched url=%s bytes=%d", url, len(data))
    return FetchedDescription(
        data, url, _format_hint(content_type, url), content_type or None
    )


async def _read_limited(
    response: aiohttp.ClientResponse, url: str, max_size: int
) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > max_size:
            raise DescriptionTooLarge(f"{url!r} is larger than {max_size} bytes")
    return bytes(body)


def _format_hint(content_type: str, url: str) -> str:
    """Trust a JSON or YAML media type; otherwise let the URL's name decide."""
    lowered = content_type.lower()
    if "json" in lowered or "yaml" in lowered:
        return content_type
    return PurePosixPath(urlsplit(url).path).name


def _read_file(path: Path, max_size: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(max_size + 1)
    except OSError as exc:
        raise XRoadIOError(f"cannot read {str(path)!r}: {exc.strerror}") from exc
    if len(data) > max_size:
        raise DescriptionTooLarge(f"{str(path)!r} is larger than {max_size} bytes")
    return data


# -- registering ---------------------------------------------------------------


async def add_wsdl_services(
    serverconf: ServerConf,
    provider: ClientId,
    source: str,
    session: aiohttp.ClientSession | None = None,
    *,
    service_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_size: int = MAX_DESCRIPTION_SIZE,
) -> list[ServiceConfig]:
    """Add one SOAP service per operation of the WSDL at ``source``.

    Each service calls ``service_url`` when given, else the ``soap:address``
    of its binding's port. All services are added, or none.

    :raises ServiceMissingUrl: no ``service_url`` and an operation has no address.
    :raises DuplicateService: a code is already configured from another source.
    """
    _check_service_url(service_url)
    fetched = await fetch_description(
        source, session, timeout=timeout, max_size=max_size
    )
    operations = parse_wsdl(fetched.data)
    configs = [
        _soap_config(provider, operation, service_url, fetched.location)
        for operation in operations
    ]

    await asyncio.to_thread(_register, serverconf, configs, ())
    log.info(
        "wsdl services added provider=%s count=%d source=%s",
        provider,
        len(configs),
        fetched.location,
    )
    return configs


async def add_openapi_service(
    serverconf: ServerConf,
    provider: ClientId,
    service_code: str,
    source: str,
    service_url: str,
    session: aiohttp.ClientSession | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_size: int = MAX_DESCRIPTION_SIZE,
) -> tuple[ServiceConfig, tuple[OpenApiEndpoint, ...]]:
    """Add a REST service with one endpoint per operation of an OpenAPI document.

    ``service_url`` is the base address; the endpoint paths are relative to
    it. The service and all its endpoints are added, or nothing.

    :raises DuplicateService: the service code is already configured.
    """
    check_identifier(service_code, "service code")
    _check_service_url(service_url)
    fetched = await fetch_description(
        source, session, timeout=timeout, max_size=max_size
    )
    description = parse_openapi(fetched.data, fetched.format_hint)
    config = ServiceConfig(
        service_id=ServiceId(provider, service_code),
        kind=ServiceKind.REST,
        url=service_url,
        timeout=SERVICE_TIMEOUT,
        description_url=fetched.location,
    )

    await asyncio.to_thread(_register, serverconf, [config], description.endpoints)
    log.info(
        "openapi service added service=%s endpoints=%d source=%s",
        config.service_id,
        len(description.endpoints),
        fetched.location,
    )
    return config, description.endpoints


def _soap_config(
    provider: ClientId,
    operation: WsdlOperation,
    service_url: str | None,
    location: str,
) -> ServiceConfig:
    service_id = ServiceId(provider, operation.service_code, operation.version)
    url = service_url or operation.address
    if not url:
        raise ServiceMissingUrl(
            f"operation {operation.service_code!r} has no soap:address; give a URL"
        )
    _check_service_url(url)
    return ServiceConfig(
        service_id=service_id,
        kind=ServiceKind.SOAP,
        url=url,
        timeout=SERVICE_TIMEOUT,
        description_url=location,
    )


def _check_service_url(url: str | None) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"service URL {url!r} must be an http(s) URL with a host")


def _register(
    serverconf: ServerConf,
    configs: list[ServiceConfig],
    endpoints: Iterable[OpenApiEndpoint],
) -> None:
    """Check for conflicts, then add services and endpoints in one transaction."""
    provider = configs[0].service_id.provider
    # The store's lock keeps other threads' statements out of our
    # transaction; ServerConf has no public transaction API yet.
    with serverconf._lock:
        if serverconf.client_status(provider) is None:
            raise UnknownMember(f"provider {provider} is not a client here")
        _check_conflicts(serverconf.services_of(provider), configs)

        with serverconf.db.atomic():
            for config in configs:
                serverconf.add_service(
                    config.service_id,
                    kind=config.kind,
                    url=config.url,
                    timeout=config.timeout,
                    description_url=config.description_url,
                )
            for endpoint in endpoints:
                serverconf.add_endpoint(
                    configs[0].service_id, endpoint.method, endpoint.path
                )


def _check_conflicts(
    existing: list[ServiceConfig], configs: list[ServiceConfig]
) -> None:
    """Refuse a code configured otherwise; a WSDL may be added again.

    Access rights and endpoints are kept per service code, so a code from
    another source (or any REST code, whose endpoints would mix) must be
    removed before it can be added from this description.
    """
    for config in configs:
        for other in existing:
            if other.service_id.service_code != config.service_id.service_code:
                continue
            same_wsdl = (
                config.kind is ServiceKind.SOAP
                and other.kind is ServiceKind.SOAP
                and other.description_url == config.description_url
            )
            if not same_wsdl:
                raise DuplicateService(
                    f"service code {config.service_id.service_code!r} is already "
                    f"configured for {config.service_id.provider}"
                )
