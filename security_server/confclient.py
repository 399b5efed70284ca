"""Net: the security server's global configuration client (global-configuration.md §8).

Downloads the own instance's signed directory from the anchor's locations,
verifies it with the protocol core, fetches changed parts and stores them in
the reference on-disk layout. ``load_conf_dir`` reads such a directory back.

How a refresh works: read the anchor, probe ``?version=6`` down to 2 on each
location until a directory verifies, refuse it if expired, reuse local files
whose digest still matches, fetch the rest, then swap all files in at once
(each file via a temporary name and ``os.replace``) and rewrite every
``.metadata``. Failures leave the stored files untouched.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
from cryptography import x509

from localio.clock import utc_now
from localio.files import write_atomic
from protocol.anchor import ConfigurationAnchor, parse_anchor, parse_time
from protocol.confdir import (
    PRIVATE_PARAMETERS,
    SHARED_PARAMETERS,
    DirectoryPart,
    SignedDirectory,
    check_part_digest,
    parse_signed_directory,
)
from protocol.errors import (
    GlobalConfError,
    HttpError,
    NetworkError,
    OutdatedGlobalConf,
    XRoadError,
)
from protocol.globalconf import (
    GlobalConf,
    PrivateParameters,
    SharedParameters,
    parse_private_params,
    parse_shared_params,
)

log = logging.getLogger(__name__)

VERSIONS = (6, 5, 4, 3, 2)  # probed from the highest down (§8 step 3)
INSTANCE_FILE = "instance-identifier"
PRIVATE_FILE = "private-params.xml"
SHARED_FILE = "shared-params.xml"
METADATA_SUFFIX = ".metadata"
MAX_BACKOFF_SECONDS = 3600

_FILE_NAMES = {
    PRIVATE_PARAMETERS: PRIVATE_FILE,
    SHARED_PARAMETERS: SHARED_FILE,
    "MONITORING": "monitoring-params.xml",
    "FETCHINTERVAL": "fetchinterval-params.xml",
    "NEXTUPDATE": "nextupdate-params.xml",
}


class MissingInstanceIdentifier(GlobalConfError):
    code = "GlobalConfMissingInstanceIdentifier"


class AnchorInstanceMismatch(GlobalConfError):
    """A re-imported anchor names another instance than the server's (§5)."""

    code = "AnchorInstanceMismatch"


class ConfHttpError(HttpError):
    """A configuration location answered with a status other than 200."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Fetched:
    """One directory part with its verified content, ready to store."""

    part: DirectoryPart
    instance: str
    file_name: str
    data: bytes


class ConfClient:
    """Keeps ``conf_dir`` in step with the central server named by the anchor."""

    def __init__(
        self,
        conf_dir: Path,
        anchor_path: Path,
        *,
        session: aiohttp.ClientSession | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        clock: Callable[[], datetime] = utc_now,
        interval_seconds: float = 60,
        timeout_seconds: float = 30,
    ) -> None:
        self.conf_dir = Path(conf_dir)
        self.anchor_path = Path(anchor_path)
        self._session = session
        self._session_factory = session_factory
        self._clock = clock
        self.interval_seconds = interval_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._last_location: str | None = None
        self.current: GlobalConf | None = None
        self.last_error: BaseException | None = None

    # -- public API

    def load(self) -> GlobalConf | None:
        """Read the stored configuration, or None when nothing usable is stored."""
        try:
            conf = load_conf_dir(self.conf_dir)
        except XRoadError as exc:
            log.info(
                "no stored global configuration dir=%s reason=%s", self.conf_dir, exc
            )
            return None
        conf = conf.without_expired_partners(self._clock())
        self.current = conf
        return conf

    async def download(self) -> GlobalConf:
        """Run one refresh (§8 steps 1-7) and return the new snapshot.

        :raises OutdatedGlobalConf: the only directory obtained had expired.
        :raises GlobalConfError: no location gave a verifiable directory.
        """
        anchor = parse_anchor(await asyncio.to_thread(self.anchor_path.read_bytes))
        instance = anchor.instance
        await asyncio.to_thread(
            write_atomic, self.conf_dir / INSTANCE_FILE, instance.encode()
        )

        if self._session is not None:
            fetched = await self._download_with(self._session, anchor)
        else:
            factory = self._session_factory or aiohttp.ClientSession
            async with factory() as session:
                fetched = await self._download_with(session, anchor)

        directory, parts = fetched
        await asyncio.to_thread(self._store, directory, parts)
        conf = await asyncio.to_thread(load_conf_dir, self.conf_dir, instance)
        conf = conf.without_expired_partners(self._clock())
        self.current = conf
        self.last_error = None
        return conf

    async def run(self) -> None:
        """Refresh forever; failures are logged and retried with back-off."""
        failures = 0
        while True:
            try:
                await self.download()
                failures = 0
                delay = self.interval_seconds
            except asyncio.CancelledError:
                raise
            except XRoadError as exc:
                failures += 1
                self.last_error = exc
                delay = self._backoff(failures)
                log.error(
                    "global conf download failed code=%s error=%s retry_in=%s",
                    exc.full_code,
                    exc,
                    delay,
                )
            except Exception as exc:  # never let the refresh loop die
                failures += 1
                self.last_error = exc
                delay = self._backoff(failures)
                log.exception("global conf download crashed retry_in=%s", delay)
            await asyncio.sleep(delay)

    def _backoff(self, failures: int) -> float:
        return min(
            float(self.interval_seconds * 2 ** min(failures - 1, 16)),
            float(MAX_BACKOFF_SECONDS),
        )

    # -- downloading

    def _locations(
        self, anchor: ConfigurationAnchor
    ) -> list[tuple[str, list[x509.Certificate]]]:
        """Candidate (url, verification certs) pairs, last good location first."""
        stored = _stored_rotation_certs(self.conf_dir, anchor.instance)
        locations = []
        for source in anchor.sources:
            if urlsplit(source.download_url).scheme != "http":
                continue  # the reference client uses only http:// anchor entries
            certs = list(source.verification_certs) + stored
            locations.append((source.download_url, certs))
        if not locations:
            raise GlobalConfError(
                f"anchor of {anchor.instance!r} has no http:// source"
            )
        locations.sort(key=lambda loc: loc[0] != self._last_location)
        return locations

    async def _download_with(
        self, session: aiohttp.ClientSession, anchor: ConfigurationAnchor
    ) -> tuple[SignedDirectory, list[_Fetched]]:
        errors: list[XRoadError] = []
        for url, certs in self._locations(anchor):
            try:
                result = await self._try_location(session, url, certs, anchor.instance)
            except XRoadError as exc:
                log.warning(
                    "global conf location failed url=%s code=%s", url, exc.full_code
                )
                errors.append(exc)
                continue
            self._last_location = url
            return result
        # Report an expiry over other failures: it is the most telling one.
        outdated = [e for e in errors if isinstance(e, OutdatedGlobalConf)]
        raise (outdated or errors)[-1]

    async def _try_location(
        self,
        session: aiohttp.ClientSession,
        url: str,
        certs: list[x509.Certificate],
        instance: str,
    ) -> tuple[SignedDirectory, list[_Fetched]]:
        body, directory_url = await self._fetch_directory(session, url)
        directory = parse_signed_directory(body, certs)
        now = self._clock()
        if directory.expire_at < now:
            raise OutdatedGlobalConf(
                f"directory from {url!r} expired at {directory.expire_at.isoformat()}"
            )
        log.info(
            "global conf directory verified url=%s version=%s expires=%s",
            directory_url,
            directory.version,
            directory.expire_at.isoformat(),
        )

        fetched = []
        for part in directory.parts:
            fetched.append(
                await self._fetch_part(session, directory_url, part, instance)
            )
        if not any(
            f.part.content_identifier == PRIVATE_PARAMETERS and f.instance == instance
            for f in fetched
        ):
            raise GlobalConfError(f"directory from {url!r} lists no private parameters")
        return directory, fetched

    async def _fetch_directory(
        self, session: aiohttp.ClientSession, url: str
    ) -> tuple[bytes, str]:
        """GET the directory, probing versions from 6 down; 404 means try lower."""
        if "version=" in urlsplit(url).query:
            return await self._get(session, url), url
        separator = "&" if urlsplit(url).query else "?"
        for version in VERSIONS:
            versioned = f"{url}{separator}version={version}"
            try:
                return await self._get(session, versioned), versioned
            except ConfHttpError as exc:
                if exc.status != 404:
                    raise
        raise HttpError(f"no configuration version {VERSIONS} is served at {url!r}")

    async def _fetch_part(
        self,
        session: aiohttp.ClientSession,
        directory_url: str,
        part: DirectoryPart,
        own_instance: str,
    ) -> _Fetched:
        instance = part.instance or own_instance
        file_name = _file_name(part)
        local = self.conf_dir / _instance_dir(instance) / file_name
        data = await asyncio.to_thread(_read_if_exists, local)
        if data is not None:
            try:
                check_part_digest(part, data)
                return _Fetched(part, instance, file_name, data)
            except GlobalConfError:
                pass  # changed: download it again

        data = await self._get(session, urljoin(directory_url, part.location))
        check_part_digest(part, data)
        _check_content(part, instance, data)
        log.info(
            "global conf part fetched location=%s instance=%s", part.location, instance
        )
        return _Fetched(part, instance, file_name, data)

    async def _get(self, session: aiohttp.ClientSession, url: str) -> bytes:
        try:
            async with session.get(url, timeout=self._timeout) as response:
                if response.status != 200:
                    raise ConfHttpError(
                        f"GET {url!r} answered HTTP {response.status}",
                        status=response.status,
                    )
                return await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NetworkError(f"GET {url!r} failed: {exc!r}") from exc

    # -- storing

    def _store(self, directory: SignedDirectory, fetched: list[_Fetched]) -> None:
        expire = directory.expire_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        kept: dict[Path, set[str]] = {}
        for item in fetched:
            folder = self.conf_dir / _instance_dir(item.instance)
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / item.file_name, item.data)
            metadata = {
                "contentIdentifier": item.part.content_identifier,
                "instanceIdentifier": item.instance,
                "expirationDate": expire,
                "contentLocation": item.part.location,
                "contentFileName": item.part.file_name,
                "configurationVersion": (
                    str(directory.version) if directory.version is not None else None
                ),
            }
            clean = {k: v for k, v in metadata.items() if v is not None}
            meta_name = item.file_name + METADATA_SUFFIX
            write_atomic(folder / meta_name, json.dumps(clean).encode())
            kept.setdefault(folder, set()).update({item.file_name, meta_name})
        for folder, names in kept.items():  # §8 step 7: drop files no longer listed
            for path in folder.iterdir():
                if path.is_file() and path.name not in names:
                    path.unlink()


# -- anchor re-import (global-configuration.md §5) ----------------------------


def anchor_fingerprint(data: bytes) -> str:
    """SHA-224 of the anchor file, upper-case hex pairs joined by ``:`` (§5)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha224(data).digest())


async def import_anchor(
    anchor_path: Path,
    data: bytes,
    *,
    instance: str,
    clock: Callable[[], datetime] = utc_now,
    session: aiohttp.ClientSession | None = None,
) -> GlobalConf:
    """Replace a server's anchor once a configuration verifies through it.

    The new anchor must name ``instance``; a configuration with private
    parameters is then downloaded into a scratch directory and verified with
    the new anchor's certificates alone. Only then is ``anchor_path``
    replaced; on any failure nothing changes. The stored configuration is
    left to the server's own refresh loop (or its next start), which reads
    the new anchor: two writers in one configuration directory would clash.

    :raises AnchorInstanceMismatch: the anchor belongs to another instance.
    :raises GlobalConfError: malformed anchor, or no configuration verified.
    """
    anchor = parse_anchor(data)
    if anchor.instance != instance:
        raise AnchorInstanceMismatch(
            f"anchor is for instance {anchor.instance!r}, this server is in {instance!r}"
        )

    scratch = Path(
        await asyncio.to_thread(
            tempfile.mkdtemp, prefix=".anchor-check-", dir=anchor_path.parent
        )
    )
    try:
        trial_anchor = scratch / "anchor.xml"
        await asyncio.to_thread(trial_anchor.write_bytes, data)
        trial = ConfClient(scratch / "conf", trial_anchor, session=session, clock=clock)
        conf = await trial.download()
        await asyncio.to_thread(write_atomic, anchor_path, data)
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)
    log.info(
        "configuration anchor imported instance=%s fingerprint=%s",
        instance,
        anchor_fingerprint(data),
    )
    return conf


# -- helpers -----------------------------------------------------------------


def _file_name(part: DirectoryPart) -> str:
    if part.content_identifier in _FILE_NAMES:
        name = _FILE_NAMES[part.content_identifier]
    else:
        name = part.file_name or urlsplit(part.location).path.rsplit("/", 1)[-1]
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise GlobalConfError(
            f"unusable local file name {name!r} for {part.location!r}"
        )
    return name


def _instance_dir(instance: str) -> str:
    # The reference names the directory by the URL-encoded instance code.
    name = quote(instance, safe="")
    if name in (".", ".."):
        raise GlobalConfError(f"unusable instance identifier {instance!r}")
    return name


def _check_content(part: DirectoryPart, instance: str, data: bytes) -> None:
    """Parse parameter files and check they describe the listed instance (§8 step 6)."""
    if part.content_identifier == PRIVATE_PARAMETERS:
        found = parse_private_params(data).instance
    elif part.content_identifier == SHARED_PARAMETERS:
        found = parse_shared_params(data).instance
    else:
        return
    if found != instance:
        raise GlobalConfError(
            f"{part.content_identifier} describes {found!r}, the directory says {instance!r}"
        )


def _read_if_exists(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _stored_rotation_certs(conf_dir: Path, instance: str) -> list[x509.Certificate]:
    """Internal verification certs of the stored shared params, if any (key rotation)."""
    data = _read_if_exists(conf_dir / _instance_dir(instance) / SHARED_FILE)
    if data is None:
        return []
    try:
        shared = parse_shared_params(data)
    except XRoadError:
        log.warning("stored shared params unreadable instance=%s", instance)
        return []
    return [c for s in shared.sources for c in s.internal_verification_certs]


# -- reading an on-disk configuration directory ------------------------------


def _read_metadata(path: Path) -> dict[str, Any]:
    raw = _read_if_exists(path.with_name(path.name + METADATA_SUFFIX))
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise GlobalConfError(f"metadata of {path.name!r} is not JSON") from exc
    return value if isinstance(value, dict) else {}


def _expiry(metadata: dict[str, Any]) -> datetime | None:
    text = metadata.get("expirationDate")
    return parse_time(text) if text else None  # absent: never expires (§8)


def load_conf_dir(path: Path, own_instance: str | None = None) -> GlobalConf:
    """Read an on-disk configuration directory in the reference layout.

    :raises MissingInstanceIdentifier: no own instance given or stored.
    :raises GlobalConfError: no instance directory, or the own instance has none.
    """
    path = Path(path)
    if own_instance is None:
        marker = _read_if_exists(path / INSTANCE_FILE)
        if marker is None or not marker.strip():
            raise MissingInstanceIdentifier(
                f"{path / INSTANCE_FILE} is missing or empty"
            )
        own_instance = marker.decode("utf-8").strip()

    shared: dict[str, SharedParameters] = {}
    expiry: dict[str, datetime | None] = {}
    private: PrivateParameters | None = None
    private_expiry: datetime | None = None
    folders = sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
    for folder in folders:
        shared_path = folder / SHARED_FILE
        if shared_path.is_file():
            params = parse_shared_params(shared_path.read_bytes())
            shared[params.instance] = params
            expiry[params.instance] = _expiry(_read_metadata(shared_path))
        private_path = folder / PRIVATE_FILE
        if private_path.is_file():
            candidate = parse_private_params(private_path.read_bytes())
            if candidate.instance == own_instance:
                private = candidate
                private_expiry = _expiry(_read_metadata(private_path))

    if not shared:
        raise GlobalConfError(f"no instance directory with shared parameters in {path}")
    if own_instance not in shared:
        raise GlobalConfError(f"no shared parameters for own instance {own_instance!r}")
    dates = [d for d in (expiry[own_instance], private_expiry) if d is not None]
    partners = {k: v for k, v in expiry.items() if k != own_instance}
    return GlobalConf(
        own_instance, private, shared, min(dates) if dates else None, partners
    )
