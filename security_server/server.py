"""Net: the security server process -- initialisation and the serving lifecycle.

``init_server`` creates a data directory from an anchor; ``SecurityServer``
starts the client proxy, the server proxy (mutual TLS), the OCSP responder for
peers and the background tasks (configuration refresh, OCSP refresh,
timestamping, archiving with retention). Both the ``xgate server`` commands
and ``xgate demo`` use them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography import x509

from localio.clock import utc_now
from protocol.anchor import parse_anchor
from protocol.errors import OutdatedGlobalConf, XRoadError
from protocol.globalconf import GlobalConf
from protocol.identifiers import ClientId

from . import tls
from .archiver import archive_records
from .clientproxy import ClientProxy
from .confclient import ConfClient
from .messagelog import MessageLog
from .ocsp import OCSPCache, ocsp_responder_app
from .peers import PeerClient
from .runtime import Runtime
from .serverconf import ServerConf
from .serverproxy import ServerProxy
from .settings import Ports, ServerSettings
from .timestamper import Timestamper
from .token import SoftToken

log = logging.getLogger(__name__)

ANCHOR_FILE = "anchor.xml"
TRANSFER_TIMEOUT_SECONDS = 600  # a hung transfer must not stop archiving
ARCHIVE_SUBDIR = "archive"


@dataclass(frozen=True, slots=True)
class InitResult:
    directory: Path
    settings: ServerSettings
    auth_csr: Path
    sign_csr: Path


async def init_server(
    directory: Path,
    anchor: bytes,
    *,
    owner: ClientId,
    server_code: str,
    pin: str,
    ports: Ports | None = None,
    bind_host: str = "0.0.0.0",
    clock: Callable[[], datetime] = utc_now,
) -> InitResult:
    """Create a security server from an anchor: verify it, make keys and CSRs.

    The global configuration is downloaded and verified first; nothing is
    written when the anchor does not lead to a valid configuration.
    """
    parsed = parse_anchor(anchor)
    if owner.instance != parsed.instance:
        raise XRoadError(
            f"owner {owner} is not in the anchor's instance {parsed.instance!r}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    (directory / ANCHOR_FILE).write_bytes(anchor)

    async with aiohttp.ClientSession() as session:
        client = ConfClient(
            directory / "globalconf",
            directory / ANCHOR_FILE,
            session=session,
            clock=clock,
        )
        try:
            await client.download()
        except Exception:
            shutil.rmtree(directory / "globalconf", ignore_errors=True)
            (directory / ANCHOR_FILE).unlink()
            raise

    settings = ServerSettings(
        instance=owner.instance,
        owner_class=owner.member_class,
        owner_code=owner.member_code,
        server_code=server_code,
        bind_host=bind_host,
        ports=ports or Ports(),
    )
    settings.save(directory)
    serverconf = ServerConf(directory)
    serverconf.set_identity(settings.server_id)
    serverconf.close()

    token = SoftToken.initialize(directory / "token", pin)
    token.login(pin)
    csr_dir = directory / "csr"
    csr_dir.mkdir(exist_ok=True)
    auth_csr = csr_dir / "auth.csr"
    auth_csr.write_bytes(token.generate_auth_key(settings.server_id))
    sign_csr = csr_dir / f"sign-{owner.member_class}-{owner.member_code}.csr"
    sign_csr.write_bytes(token.generate_sign_key(owner))
    return InitResult(directory, settings, auth_csr, sign_csr)


class SecurityServer:
    """One running security server; ``start`` then ``stop``."""

    def __init__(
        self, directory: Path, pin: str, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.directory = directory
        self.pin = pin
        self.clock = clock
        self.settings = ServerSettings.load(directory)
        self.runtime: Runtime | None = None
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._trust: tls.TrustSwapper | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        token = SoftToken(self.directory / "token")
        token.login(self.pin)
        serverconf = ServerConf(self.directory)
        self._session = session = aiohttp.ClientSession(auto_decompress=False)

        conf_client = ConfClient(
            self.directory / "globalconf",
            self.directory / ANCHOR_FILE,
            session=session,
            clock=self.clock,
            interval_seconds=settings.conf_refresh_seconds,
        )
        conf = await self._first_configuration(conf_client)

        ocsp = OCSPCache(
            self.clock,
            session,
            lambda: conf_client.current,
            token.certificates,
            cache_dir=self.directory / "ocsp",
        )
        await ocsp.refresh()
        message_log = MessageLog.open(self.directory / "messagelog.db")
        timestamper = Timestamper(
            message_log,
            tsa_sources=lambda: _tsa_sources(conf_client.current, settings.instance),
            session=session,
            clock=self.clock,
            interval_seconds=settings.timestamp_interval_seconds,
            batch=True,  # records waiting together share one token (message-log.md §5)
        )
        spool_dir = self.directory / "spool"
        spool_dir.mkdir(mode=0o700, exist_ok=True)
        runtime = Runtime(
            settings=settings,
            clock=self.clock,
            token=token,
            serverconf=serverconf,
            conf_client=conf_client,
            ocsp=ocsp,
            message_log=message_log,
            timestamper=timestamper,
            spool_dir=spool_dir,
        )
        runtime.peers = PeerClient(
            auth_key=token.auth_key,
            auth_chain=token.auth_chain,
            timeout_seconds=settings.peer_timeout_seconds,
            plain_session=session,
        )
        self.runtime = runtime

        self._trust = tls.TrustSwapper(
            token.auth_key, token.auth_chain, conf.ca_certs(settings.instance)
        )
        host, ports = settings.bind_host, settings.ports
        await self._site(ClientProxy(runtime).app(), host, ports.client_http)
        await self._site(
            ServerProxy(runtime, session).app(),
            host,
            ports.server_proxy,
            ssl_context=self._trust.context,
        )
        await self._site(ocsp_responder_app(ocsp), host, ports.ocsp)
        for job in (
            conf_client.run(),
            ocsp.run(),
            timestamper.run(),
            self._follow_conf(),
            self._archive_periodically(),
        ):
            self._tasks.append(asyncio.create_task(job))
        log.info("security server %s started", settings.server_id)

    async def _first_configuration(self, conf_client: ConfClient) -> GlobalConf:
        conf_client.load()
        try:
            await conf_client.download()
        except XRoadError as err:
            log.warning("configuration download failed code=%s", err.full_code)
        conf = conf_client.current
        if conf is None:
            raise OutdatedGlobalConf("no global configuration; refusing to serve")
        conf.check_valid(self.clock())
        return conf

    async def _follow_conf(self) -> None:
        """Keep the TLS trust store equal to the approved CAs of the current configuration."""
        seen = None
        while True:
            conf = self.runtime.conf_client.current if self.runtime else None
            if conf is not None and conf is not seen and self._trust is not None:
                token = self.runtime.token  # type: ignore[union-attr]
                self._trust.update(
                    token.auth_key,
                    token.auth_chain,
                    conf.ca_certs(self.settings.instance),
                )
                seen = conf
            await asyncio.sleep(1)

    @property
    def archive_dir(self) -> Path:
        """Where the scheduled archiver writes (``archive_dir`` in server.json)."""
        configured = self.settings.archive_dir
        return Path(configured) if configured else self.directory / ARCHIVE_SUBDIR

    async def _archive_periodically(self) -> None:
        """Every ``archive_interval_seconds``: archive, then apply retention (§7)."""
        while True:
            await asyncio.sleep(self.settings.archive_interval_seconds)
            await self.archive_once()

    async def _transfer(self, archive: Path) -> None:
        """Hand a new archive to the deployment's transfer command (message-log.md §7)."""
        command = [*self.settings.archive_transfer_command, str(archive)]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(
                process.communicate(), TRANSFER_TIMEOUT_SECONDS
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            log.error("archive transfer timed out archive=%s", archive)
            return
        if process.returncode != 0:
            log.error(
                "archive transfer failed archive=%s status=%s stderr=%s",
                archive,
                process.returncode,
                stderr[-500:].decode("utf-8", "replace"),
            )
        else:
            log.info("archive transferred archive=%s", archive)

    async def archive_once(self) -> int:
        """Archive stamped records, then delete archived ones past the keep period.

        Returns how many records were deleted. Never raises: a failure is
        logged and the next round tries again; records are deleted only
        after an archiving step that did not fail.
        """
        runtime = self.runtime
        if runtime is None:
            return 0
        now = self.clock()
        try:
            written = await archive_records(
                runtime.message_log,
                self.archive_dir,
                now=now,
                after_archive=self._transfer
                if self.settings.archive_transfer_command
                else None,
            )
            keep = timedelta(days=self.settings.keep_records_days)
            removed = await runtime.message_log.remove_archived(now - keep)
        except XRoadError as err:
            log.error("archiving failed code=%s: %s", err.full_code, err.message)
            return 0
        except Exception:  # noqa: BLE001 - the background task must keep running
            log.exception("archiving failed")
            return 0
        log.info(
            "archiving done archives=%s records_removed=%s dir=%s",
            len(written),
            removed,
            self.archive_dir,
        )
        return removed

    async def _site(
        self, app: web.Application, host: str, port: int, **kwargs: object
    ) -> None:
        limits = self.settings
        runner = web.AppRunner(
            app,
            access_log=None,
            # Bodies pass through as sent: a gzip body stays gzip.
            auto_decompress=False,
            max_line_size=limits.max_header_line_bytes,
            max_field_size=limits.max_header_line_bytes,
            max_headers=limits.max_header_count,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, **kwargs)  # type: ignore[arg-type]
        await site.start()
        self._runners.append(runner)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=5)
            for task in stuck:
                log.error("background task did not stop: %s", task.get_coro())
        self._tasks.clear()
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self.runtime is not None:
            await self.runtime.close()
            if self.runtime.peers is not None:
                await self.runtime.peers.close()
            self.runtime.message_log.close()
            self.runtime.serverconf.close()
        if self._session is not None:
            await self._session.close()


def _tsa_sources(
    conf: GlobalConf | None, instance: str
) -> list[tuple[str, x509.Certificate]]:
    if conf is None:
        return []
    return [(tsa.url, tsa.cert) for tsa in conf.approved_tsas(instance)]
