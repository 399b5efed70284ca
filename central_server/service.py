"""Net: the central server's HTTP services (DESIGN.md ports 8070 and 8072).

``conf_app`` serves the published global configuration
(global-configuration.md §2, §3): ``/internalconf?version=6`` and the part
files under ``/V6/<stamp>/``. :class:`CentralServer` ties the registry, the
CA's OCSP responder and a periodic publisher together.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from localio.http import read_at_most
from protocol.errors import XRoadError
from protocol.identifiers import ClientId, check_strict
from protocol.management import MAX_REQUEST_BYTES
from protocol.pki import EJBCA_PROFILE
from protocol.soap import FAULT_CONTENT_TYPE, build_fault

from .ca import CertificateAuthority, ocsp_app
from .management import ManagementCenter
from .publisher import (
    CONF_VERSION,
    PUBLISHED_FILES,
    STAMP_PATTERN,
    ConfSigningKeys,
    generate,
)
from .registry import Registry

log = logging.getLogger(__name__)

CONFIG_FILE = "central.json"
CA_DIR = "ca"
CONF_DIR = "conf"
MANAGEMENT_SUBSYSTEM = "MANAGEMENT"
DEFAULT_PORTS = {"conf_port": 8070, "admin_port": 8071, "ocsp_port": 8072}
DEFAULT_MEMBER_CLASSES = (("GOV", "Government"), ("COM", "Commercial"))

Clock = Callable[[], dt.datetime]


class CentralConfigError(XRoadError):
    code: ClassVar[str] = "CentralServerConfig"


# -- configuration HTTP ---------------------------------------------------------


def conf_app(out_dir: Path) -> web.Application:
    """Serve what :func:`central_server.publisher.generate` wrote to ``out_dir``."""
    out_dir = Path(out_dir)

    async def internalconf(request: web.Request) -> web.StreamResponse:
        # §2: only the published version is served; no parameter means
        # version 2 to the reference client, which we do not publish.
        if request.query.get("version") != str(CONF_VERSION):
            raise web.HTTPNotFound()
        path = out_dir / f"V{CONF_VERSION}" / "internalconf"
        return await _file_response(path, directory=True)

    async def externalconf(request: web.Request) -> web.StreamResponse:
        # TODO(#7): no external source until federation exists; §2 lets a
        # source answer 404 for what it does not publish.
        raise web.HTTPNotFound()

    async def part_file(request: web.Request) -> web.StreamResponse:
        stamp = request.match_info["stamp"]
        name = request.match_info["name"]
        # Both segments are whitelisted, so the path cannot leave out_dir.
        if not STAMP_PATTERN.match(stamp) or name not in PUBLISHED_FILES:
            raise web.HTTPNotFound()
        path = out_dir / f"V{CONF_VERSION}" / stamp / name
        return await _file_response(path, directory=False)

    app = web.Application()
    app.router.add_get("/internalconf", internalconf)
    app.router.add_get("/externalconf", externalconf)
    app.router.add_get(f"/V{CONF_VERSION}/{{stamp}}/{{name}}", part_file)
    return app


async def _file_response(path: Path, *, directory: bool) -> web.Response:
    try:
        body = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        raise web.HTTPNotFound() from None
    content_type = (
        _entity_content_type(body) if directory else "application/octet-stream"
    )
    return web.Response(body=body, headers={"Content-Type": content_type})


def _entity_content_type(body: bytes) -> str:
    """The Content-Type line of the entity's own header block (§3)."""
    first = body.split(b"\n", 1)[0].strip()
    name, _, value = first.partition(b":")
    if name.strip().lower() == b"content-type" and value.strip():
        return value.strip().decode("ascii", "replace")
    return "application/octet-stream"


# -- management service HTTP ------------------------------------------------------


def management_app(center: ManagementCenter, clock: Clock) -> web.Application:
    """Serve ``POST /managementservice/`` (management-services.md §3-§5)."""

    async def on_request(request: web.Request) -> web.Response:
        if request.content_length is not None and (
            request.content_length > MAX_REQUEST_BYTES
        ):
            return _fault("RequestTooLarge", "the request is too large")
        raw = await read_at_most(request.content, MAX_REQUEST_BYTES)
        content_type = request.headers.get("Content-Type", "")
        try:
            reply = await asyncio.to_thread(center.receive, raw, content_type, clock())
        except XRoadError as err:
            log.error("management request refused code=%s: %s", err.full_code, err)
            return _fault(err.full_code, err.message)
        return web.Response(body=reply, content_type="text/xml", charset="utf-8")

    app = web.Application(client_max_size=MAX_REQUEST_BYTES + 1)
    app.router.add_post("/managementservice/", on_request)
    return app


def _fault(code: str, message: str) -> web.Response:
    return web.Response(
        status=500,
        body=build_fault(code, message, ""),
        headers={"Content-Type": FAULT_CONTENT_TYPE},
    )


# -- the running server ---------------------------------------------------------


def read_config(dir: Path) -> dict[str, Any]:
    """Read ``central.json``: instance, address and ports."""
    try:
        config = json.loads((Path(dir) / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CentralConfigError(f"cannot read {CONFIG_FILE} in {str(dir)!r}") from exc
    if not isinstance(config, dict) or "address" not in config:
        raise CentralConfigError(f"{CONFIG_FILE} in {str(dir)!r} has no address")
    return config


class CentralServer:
    """Registry, CA and publisher behind the configuration and OCSP listeners."""

    def __init__(
        self,
        dir: Path,
        *,
        host: str,
        conf_port: int,
        ocsp_port: int,
        clock: Clock,
        generation_interval: float = 60,
        admin_port: int | None = None,
    ) -> None:
        self.dir = Path(dir)
        self.admin_port = admin_port
        self.host = host
        self.conf_port = conf_port
        self.ocsp_port = ocsp_port
        self.clock = clock
        self.generation_interval = generation_interval
        self.out_dir = self.dir / CONF_DIR
        self.registry: Registry | None = None
        self.ca: CertificateAuthority | None = None
        self.keys: ConfSigningKeys | None = None
        self.management: ManagementCenter | None = None
        self._runners: list[web.AppRunner] = []
        self._ocsp_runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self._generate_lock = asyncio.Lock()

    async def start(self) -> None:
        """Open the stores, publish once, then start listening and regenerating."""
        self.registry = await asyncio.to_thread(Registry.open, self.dir)
        self.ca = await asyncio.to_thread(CertificateAuthority.open, self.dir / CA_DIR)
        self.keys = await asyncio.to_thread(ConfSigningKeys.open, self.dir)
        await self.regenerate()

        self.conf_port = await self._serve(conf_app(self.out_dir), self.conf_port)
        if self.admin_port is not None:
            self.management = await asyncio.to_thread(ManagementCenter, self.registry)
            self.admin_port = await self._serve(
                management_app(self.management, self.clock), self.admin_port
            )
        await self.start_ocsp()
        self._task = asyncio.create_task(self._regenerate_forever())
        log.info(
            "central server started conf_port=%s ocsp_port=%s",
            self.conf_port,
            self.ocsp_port,
        )

    async def start_ocsp(self) -> None:
        """Start the OCSP responder (after ``stop_ocsp``, on the same port)."""
        if self.ca is None:
            raise CentralConfigError("the central server is not started")
        self.ocsp_port = await self._serve(
            ocsp_app(self.ca, self.clock), self.ocsp_port
        )
        self._ocsp_runner = self._runners[-1]

    async def stop_ocsp(self) -> None:
        """Stop answering OCSP requests, leaving the other services running."""
        runner, self._ocsp_runner = self._ocsp_runner, None
        if runner is not None:
            self._runners.remove(runner)
            await runner.cleanup()

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.host, port)
        await site.start()
        # Port 0 asks the OS for a free port; report the one we got.
        addresses = runner.addresses
        return int(addresses[-1][1]) if addresses else port

    async def regenerate(self) -> Path:
        """Publish a new configuration directory now."""
        if self.registry is None or self.keys is None:
            raise CentralConfigError("the central server is not started")
        async with self._generate_lock:
            path = await asyncio.to_thread(
                generate, self.registry, self.keys, self.out_dir, self.clock()
            )
        log.debug("configuration generated path=%s", path)
        return path

    async def _regenerate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.generation_interval)
            try:
                await self.regenerate()
            except XRoadError as err:
                log.error("configuration generation failed code=%s: %s", err.code, err)
            except Exception:
                log.exception("configuration generation failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.registry is not None:
            self.registry.close()
            self.registry = None
        log.info("central server stopped")


async def serve_central(
    dir: Path,
    host: str = "127.0.0.1",
    conf_port: int | None = None,
    ocsp_port: int | None = None,
    clock: Clock | None = None,
    generation_interval: float = 60,
) -> None:
    """Run a central server until cancelled; ports default to ``central.json``."""
    config = read_config(dir)
    server = CentralServer(
        dir,
        host=host,
        conf_port=conf_port if conf_port is not None else config["conf_port"],
        ocsp_port=ocsp_port if ocsp_port is not None else config["ocsp_port"],
        admin_port=config.get("admin_port", DEFAULT_PORTS["admin_port"]),
        clock=clock or (lambda: dt.datetime.now(dt.UTC)),
        generation_interval=generation_interval,
    )
    await server.start()
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


# -- initialisation -------------------------------------------------------------


def init_central(
    dir: Path,
    instance: str,
    *,
    authority_member: ClientId,
    address: str,
    now: dt.datetime,
    authority_name: str | None = None,
    conf_port: int = DEFAULT_PORTS["conf_port"],
    admin_port: int = DEFAULT_PORTS["admin_port"],
    ocsp_port: int = DEFAULT_PORTS["ocsp_port"],
) -> None:
    """Create a new instance: registry, CA, signing key and ``central.json``.

    The authority member is registered with a ``MANAGEMENT`` subsystem that
    provides the management services; the instance's own CA is approved with
    the EJBCA profile and its OCSP responder on ``ocsp_port``.
    """
    dir = Path(dir)
    check_strict(instance, "instance identifier")
    if (dir / CONFIG_FILE).exists():
        raise CentralConfigError(f"{str(dir)!r} already holds a central server")
    if authority_member.instance != instance or authority_member.subsystem_code:
        raise CentralConfigError(
            f"authority {str(authority_member)!r} must be a member of {instance!r}"
        )

    registry = Registry.create(dir, instance)
    try:
        _fill_registry(registry, authority_member, authority_name, address)
        ocsp_url = f"http://{address}:{ocsp_port}/"
        ca = CertificateAuthority.create(dir / CA_DIR, instance, now, ocsp_url=ocsp_url)
        registry.add_approved_ca(
            f"{instance} CA",
            ca.ca_cert.public_bytes(serialization.Encoding.DER),
            profile=EJBCA_PROFILE,
            ocsp_url=ocsp_url,
            ocsp_cert_der=ca.ocsp_cert.public_bytes(serialization.Encoding.DER),
        )
        registry.set_management_service(
            f"http://{address}:{admin_port}/managementservice/",
            _management(authority_member),
        )
    finally:
        registry.close()
    ConfSigningKeys.create(dir, instance, now)

    config = {
        "instance": instance,
        "address": address,
        "conf_port": conf_port,
        "admin_port": admin_port,
        "ocsp_port": ocsp_port,
    }
    (dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def _management(member: ClientId) -> ClientId:
    return ClientId(
        member.instance, member.member_class, member.member_code, MANAGEMENT_SUBSYSTEM
    )


def _fill_registry(
    registry: Registry, member: ClientId, name: str | None, address: str
) -> None:
    classes = dict(DEFAULT_MEMBER_CLASSES)
    classes.setdefault(member.member_class, member.member_class)
    for code, description in classes.items():
        registry.add_member_class(code, description)
    registry.add_member(member, name or member.member_code)
    registry.add_subsystem(_management(member))
    registry.set_central_server_address(address)
