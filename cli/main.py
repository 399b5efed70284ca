"""CLI: the ``xgate`` command -- one entry point for every role.

Commands only parse options, call one function of a role package, and print.
Identifiers are written without the instance (``GOV/1001/REGISTRY``); the
instance comes from the data directory. The ``serve`` commands stop cleanly
on SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from protocol.errors import XRoadError
from protocol.identifiers import ClientId, SecurityServerId, ServiceId, check_strict

from .errors import coded_errors

if TYPE_CHECKING:
    from central_server.ca import IssuedCertificate
    from security_server.settings import ServerSettings

PIN_ENV = "XGATE_PIN"


def now() -> datetime:
    return datetime.now(UTC)


def _parts(text: str, sizes: tuple[int, ...], form: str) -> list[str]:
    """Split a slash-separated identifier and check each component.

    Components must use the strict character set (identifiers.md §6), the
    one the registry enforces when identifiers are created.
    """
    parts = text.split("/")
    if len(parts) not in sizes or not all(parts):
        raise click.BadParameter(f"expected {form}, got {text!r}")
    for part in parts:
        try:
            check_strict(part, "component")
        except XRoadError as err:
            raise click.BadParameter(f"{err.message} in {text!r}") from err
    return parts


def _member(instance: str, text: str) -> ClientId:
    return ClientId(instance, *_parts(text, (2,), "CLASS/CODE"))


def _client(instance: str, text: str) -> ClientId:
    return ClientId(instance, *_parts(text, (2, 3), "CLASS/CODE[/SUBSYSTEM]"))


def _subsystem(instance: str, text: str) -> ClientId:
    return ClientId(instance, *_parts(text, (3,), "CLASS/CODE/SUBSYSTEM"))


def _server(instance: str, text: str) -> SecurityServerId:
    member_class, member_code, server_code = _parts(text, (3,), "CLASS/CODE/SERVERCODE")
    return SecurityServerId(ClientId(instance, member_class, member_code), server_code)


def _serve(serving: Coroutine[Any, Any, None]) -> None:
    """Run a serve-forever coroutine until SIGINT or SIGTERM.

    The signal cancels the coroutine so its ``finally`` blocks close the
    listeners and stores: a service manager's stop is a clean exit.
    """

    async def run() -> None:
        task = asyncio.ensure_future(serving)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with coded_errors():
        asyncio.run(run())


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug output and tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """xgate: an X-Road compatible secure data-exchange layer."""
    ctx.obj = {"verbose": verbose}
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


dir_option = click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(path_type=Path),
    help="Data directory of this role.",
)


# -- central server --------------------------------------------------------------


@main.group()
def central() -> None:
    """Governing authority: registry, CA and OCSP, global configuration."""


def _registry(directory: Path):  # type: ignore[no-untyped-def]
    from central_server.registry import Registry

    return contextlib.closing(Registry.open(directory))


ACTOR_ENV = "XGATE_ACTOR"


def _actor() -> str:
    """Who runs the command, for the audit log: ``$XGATE_ACTOR`` or the OS user."""
    import getpass

    return os.environ.get(ACTOR_ENV) or getpass.getuser()


@contextlib.contextmanager
def _audited(directory: Path, action: str, target: str):  # type: ignore[no-untyped-def]
    """Open the registry for one change and write its audit line, ok or failed."""
    from central_server.management import record_audit

    with _registry(directory) as registry:
        result = "ok"
        try:
            yield registry
        except XRoadError as err:
            result = err.full_code
            raise
        except Exception:
            result = "error"
            raise
        finally:
            record_audit(
                registry,
                actor=_actor(),
                action=action,
                target=target,
                result=result,
                now=now(),
            )


@central.command("requests")
@dir_option
@click.option(
    "--state",
    type=click.Choice(["submitted", "approved", "rejected"]),
    default=None,
    help="Only requests in this state.",
)
def central_requests(directory: Path, state: str | None) -> None:
    """List management requests from security servers, as JSON lines."""
    from central_server.management import (
        ManagementCenter,
        RequestState,
        request_summary,
    )

    with coded_errors(), _registry(directory) as registry:
        center = ManagementCenter(registry)
        stored = center.list_requests(RequestState(state) if state else None)
    for item in stored:
        click.echo(json.dumps(request_summary(item)))


@central.command("request-approve")
@dir_option
@click.argument("request_id", type=int)
def central_request_approve(directory: Path, request_id: int) -> None:
    """Approve a submitted request and apply it to the registry."""
    from central_server.management import ManagementCenter

    with coded_errors(), _registry(directory) as registry:
        ManagementCenter(registry).approve(request_id, actor=_actor(), now=now())
    click.echo(f"request {request_id} approved; publish to announce it")


@central.command("request-reject")
@dir_option
@click.argument("request_id", type=int)
def central_request_reject(directory: Path, request_id: int) -> None:
    """Reject a submitted request; the registry is not changed."""
    from central_server.management import ManagementCenter

    with coded_errors(), _registry(directory) as registry:
        ManagementCenter(registry).reject(request_id, actor=_actor(), now=now())
    click.echo(f"request {request_id} rejected")


@central.command("audit-log")
@dir_option
def central_audit_log(directory: Path) -> None:
    """Print the audit log of administrative actions, oldest first."""
    from central_server.management import list_audit_log

    with coded_errors(), _registry(directory) as registry:
        entries = list_audit_log(registry)
    for entry in entries:
        click.echo(
            f"{entry.at}\t{entry.actor}\t{entry.action}\t{entry.target}\t{entry.result}"
        )


@central.command("init")
@dir_option
@click.option("--instance", required=True, help="Instance identifier, e.g. DEMO.")
@click.option(
    "--authority", required=True, help="Governing authority member CLASS/CODE."
)
@click.option("--authority-name", default=None)
@click.option(
    "--address", required=True, help="Host name peers use to reach this server."
)
@click.option("--conf-port", default=8070, show_default=True)
@click.option("--ocsp-port", default=8072, show_default=True)
@click.option(
    "--admin-port",
    default=8071,
    show_default=True,
    help="Port of the management service security servers register through.",
)
def central_init(
    directory: Path,
    instance: str,
    authority: str,
    authority_name: str | None,
    address: str,
    conf_port: int,
    ocsp_port: int,
    admin_port: int,
) -> None:
    """Create an instance: CA, OCSP signer, configuration signing key."""
    from central_server.service import init_central

    with coded_errors():
        init_central(
            directory,
            instance,
            authority_member=_member(instance, authority),
            authority_name=authority_name,
            address=address,
            now=now(),
            conf_port=conf_port,
            ocsp_port=ocsp_port,
            admin_port=admin_port,
        )
    click.echo(f"instance {instance} created in {directory}")


@central.command("serve")
@dir_option
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--generation-interval", default=60.0, show_default=True)
def central_serve(directory: Path, host: str, generation_interval: float) -> None:
    """Serve the global configuration and OCSP until interrupted."""
    from central_server.service import serve_central

    _serve(serve_central(directory, host, generation_interval=generation_interval))


@central.command("member-add")
@dir_option
@click.argument("member")
@click.option("--name", required=True)
def central_member_add(directory: Path, member: str, name: str) -> None:
    """Register a member CLASS/CODE."""
    with coded_errors(), _audited(directory, "member-add", member) as registry:
        member_id = _member(registry.instance, member)
        registry.add_member(member_id, name)
    click.echo(f"member {member_id} registered")


@central.command("subsystem-add")
@dir_option
@click.argument("subsystem")
def central_subsystem_add(directory: Path, subsystem: str) -> None:
    """Register a subsystem CLASS/CODE/SUBSYSTEM."""
    with coded_errors(), _audited(directory, "subsystem-add", subsystem) as registry:
        subsystem_id = _subsystem(registry.instance, subsystem)
        registry.add_subsystem(subsystem_id)
    click.echo(f"subsystem {subsystem_id} registered")


@central.command("server-add")
@dir_option
@click.argument("server")
@click.option("--address", required=True, help="host, or host:port of its server proxy")
def central_server_add(directory: Path, server: str, address: str) -> None:
    """Register a security server CLASS/CODE/SERVERCODE."""
    with coded_errors(), _audited(directory, "server-add", server) as registry:
        security_server_id = _server(registry.instance, server)
        registry.add_security_server(security_server_id, address)
    click.echo(f"security server {security_server_id} registered at {address}")


@central.command("auth-cert-add")
@dir_option
@click.argument("server")
@click.argument("cert_file", type=click.Path(exists=True, path_type=Path))
def central_auth_cert_add(directory: Path, server: str, cert_file: Path) -> None:
    """Register a security server's authentication certificate."""
    with coded_errors(), _audited(directory, "auth-cert-add", server) as registry:
        cert = _load_cert(cert_file.read_bytes())
        security_server_id = _server(registry.instance, server)
        registry.add_auth_cert(
            security_server_id, cert.public_bytes(serialization.Encoding.DER)
        )
    click.echo(
        f"authentication certificate serial {cert.serial_number:x}"
        f" registered for {security_server_id}"
    )


@central.command("client-register")
@dir_option
@click.argument("server")
@click.argument("client")
def central_client_register(directory: Path, server: str, client: str) -> None:
    """Register CLIENT (CLASS/CODE[/SUB]) as a client of SERVER."""
    with (
        coded_errors(),
        _audited(directory, "client-register", f"{server} {client}") as registry,
    ):
        security_server_id = _server(registry.instance, server)
        client_id = _client(registry.instance, client)
        registry.register_client(security_server_id, client_id)
    click.echo(f"client {client_id} registered on {security_server_id}")


@central.command("tsa-add")
@dir_option
@click.option("--name", required=True)
@click.option("--url", required=True)
@click.option(
    "--cert", "cert_file", required=True, type=click.Path(exists=True, path_type=Path)
)
def central_tsa_add(directory: Path, name: str, url: str, cert_file: Path) -> None:
    """Approve a timestamping authority."""
    with coded_errors(), _audited(directory, "tsa-add", name) as registry:
        cert = _load_cert(cert_file.read_bytes())
        registry.add_approved_tsa(
            name, url, cert.public_bytes(serialization.Encoding.DER)
        )
    click.echo(f"timestamping authority {name!r} approved at {url}")


@central.command("ca-add")
@dir_option
@click.option("--name", required=True, help="Name of the approved CA.")
@click.option(
    "--cert", "cert_file", required=True, type=click.Path(exists=True, path_type=Path)
)
@click.option(
    "--intermediate",
    "intermediate_files",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="An intermediate CA certificate below it (repeatable).",
)
@click.option("--ocsp-url", required=True, help="The CA's OCSP responder URL.")
@click.option(
    "--ocsp-cert",
    "ocsp_cert_file",
    default=None,
    type=click.Path(exists=True, path_type=Path),
    help="The responder's certificate, when it is not the CA or its delegate.",
)
@click.option("--profile", default=None, help="Certificate profile (default EJBCA).")
@click.option("--auth-only", is_flag=True, help="Only for authentication certs.")
def central_ca_add(
    directory: Path,
    name: str,
    cert_file: Path,
    intermediate_files: tuple[Path, ...],
    ocsp_url: str,
    ocsp_cert_file: Path | None,
    profile: str | None,
    auth_only: bool,
) -> None:
    """Approve an external CA; its intermediates share its OCSP responder."""
    from central_server.registry import IntermediateCA
    from protocol.pki import EJBCA_PROFILE

    def der(path: Path) -> bytes:
        cert = _load_cert(path.read_bytes())
        return cert.public_bytes(serialization.Encoding.DER)

    with coded_errors(), _audited(directory, "ca-add", name) as registry:
        ocsp_cert = der(ocsp_cert_file) if ocsp_cert_file else None
        registry.add_approved_ca(
            name,
            der(cert_file),
            profile=profile or EJBCA_PROFILE,
            ocsp_url=ocsp_url,
            ocsp_cert_der=ocsp_cert,
            authentication_only=auth_only,
            intermediates=[
                IntermediateCA(der(path), ocsp_url, ocsp_cert)
                for path in intermediate_files
            ],
        )
    click.echo(
        f"certification authority {name!r} approved"
        f" with {len(intermediate_files)} intermediate(s); publish to announce it"
    )


@central.command("cert-issue")
@dir_option
@click.argument("csr_file", type=click.Path(exists=True, path_type=Path))
@click.option("--kind", type=click.Choice(["auth", "sign"]), required=True)
@click.option(
    "--member",
    default=None,
    help="Member CLASS/CODE the CSR must name; required for sign certs.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def central_cert_issue(
    directory: Path,
    csr_file: Path,
    kind: Literal["auth", "sign"],
    member: str | None,
    out: Path,
) -> None:
    """Issue a certificate from a security server's CSR."""
    from central_server.ca import CertificateAuthority
    from central_server.service import CA_DIR, read_config

    # The authority vouches for who signs: a sign CSR's member is checked.
    if kind == "sign" and member is None:
        raise click.UsageError("--member is required for sign certificates")
    with coded_errors():
        instance = read_config(directory)["instance"]
        expected = _member(instance, member) if member else None
        ca = CertificateAuthority.open(directory / CA_DIR)
        cert = ca.issue(csr_file.read_bytes(), kind, now(), expected_member=expected)
    out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    click.echo(f"{kind} certificate serial {cert.serial_number:x} written to {out}")


@central.command("anchor-export")
@dir_option
@click.option("--out", type=click.Path(path_type=Path), required=True)
def central_anchor_export(directory: Path, out: Path) -> None:
    """Write the configuration anchor security servers start from."""
    from central_server.publisher import ConfSigningKeys, export_anchor
    from central_server.service import read_config

    with coded_errors():
        config = read_config(directory)
        base = f"http://{config['address']}:{config['conf_port']}"
        with _registry(directory) as registry:
            anchor = export_anchor(
                registry, ConfSigningKeys.open(directory), base, now()
            )
    out.write_bytes(anchor)
    click.echo(f"anchor written to {out}")


@central.command("publish")
@dir_option
def central_publish(directory: Path) -> None:
    """Publish the global configuration now, without waiting for the next round."""
    from central_server.publisher import ConfSigningKeys, generate
    from central_server.service import CONF_DIR

    with coded_errors(), _registry(directory) as registry:
        path = generate(
            registry, ConfSigningKeys.open(directory), directory / CONF_DIR, now()
        )
    click.echo(f"global configuration published: {path}")


_REASONS = [
    r.value for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl
]


def _serial(text: str) -> int:
    """A serial as the CLI prints it: hexadecimal, with or without ``0x``."""
    try:
        return int(text.removeprefix("0x").removeprefix("0X"), 16)
    except ValueError:
        raise click.BadParameter(
            f"expected a hexadecimal serial, got {text!r}"
        ) from None


@central.command("cert-revoke")
@dir_option
@click.argument("serial")
@click.option(
    "--reason", type=click.Choice(_REASONS), default="unspecified", show_default=True
)
def central_cert_revoke(directory: Path, serial: str, reason: str) -> None:
    """Revoke an issued certificate (SERIAL in hex); OCSP answers revoked at once."""
    from central_server.ca import CertificateAuthority
    from central_server.service import CA_DIR

    number = _serial(serial)
    with coded_errors():
        ca = CertificateAuthority.open(directory / CA_DIR)
        ca.revoke(number, now(), x509.ReasonFlags(reason))
        record = ca.status(number)
    revoked_at = record.revoked_at.isoformat() if record and record.revoked_at else "?"
    click.echo(f"certificate serial {number:x} revoked at {revoked_at} ({reason})")


@central.command("cert-list")
@dir_option
def central_cert_list(directory: Path) -> None:
    """List issued certificates: serial, kind, status, not after, subject."""
    from central_server.service import CA_DIR

    with coded_errors():
        records = _issued(directory / CA_DIR)
    for record in records:
        status = record.status.value
        if record.revoked_at is not None:
            status += f" {record.revoked_at.isoformat()}"
        click.echo(
            f"{record.serial:x}\t{record.kind}\t{status}"
            f"\t{record.not_after.date().isoformat()}\t{record.subject}"
        )


def _issued(ca_dir: Path) -> list[IssuedCertificate]:
    import sqlite_utils

    from central_server.ca import DATABASE, TABLE, CertificateAuthority

    ca = CertificateAuthority.open(ca_dir)
    # FIXME(#4): CertificateAuthority has no listing method; read the serials
    # from its table and take every record through the public status().
    db = sqlite_utils.Database(ca_dir / DATABASE)
    try:
        serials = [int(str(row["serial"])) for row in db[TABLE].rows]
    finally:
        db.conn.close()
    records = [ca.status(serial) for serial in serials]
    return sorted(
        (r for r in records if r is not None), key=lambda r: (r.not_before, r.serial)
    )


@central.command("signing-key-add")
@dir_option
def central_signing_key_add(directory: Path) -> None:
    """Add a standby configuration signing key (global-configuration.md §10)."""
    from central_server.publisher import ConfSigningKeys
    from central_server.service import read_config

    with coded_errors():
        instance = read_config(directory)["instance"]
        key = ConfSigningKeys.open(directory).add(instance, now())
    click.echo(f"standby signing key {key.key_id} added")
    click.echo(
        "publish, let the security servers download, then run signing-key-activate;"
        " export a new anchor for servers that join later"
    )


@central.command("signing-key-activate")
@dir_option
@click.argument("key_id")
def central_signing_key_activate(directory: Path, key_id: str) -> None:
    """Sign the global configuration with KEY_ID from the next publication on."""
    from central_server.publisher import ConfSigningKeys

    with coded_errors():
        key = ConfSigningKeys.open(directory).activate(key_id)
    click.echo(f"signing key {key.key_id} is active")


@central.command("signing-key-list")
@dir_option
def central_signing_key_list(directory: Path) -> None:
    """List the configuration signing keys: id, status, certificate SHA-256."""
    from cryptography.hazmat.primitives import hashes

    from central_server.publisher import ConfSigningKeys

    with coded_errors():
        infos = ConfSigningKeys.open(directory).listing()
    for info in infos:
        digest = info.cert.fingerprint(hashes.SHA256()).hex()
        click.echo(f"{info.key_id}\t{info.status.value}\t{digest}")


# -- timestamping authority --------------------------------------------------------


@main.group()
def tsa() -> None:
    """Timestamping authority (RFC 3161)."""


@tsa.command("init")
@dir_option
@click.option("--name", required=True)
def tsa_init(directory: Path, name: str) -> None:
    """Create the TSA key and certificate."""
    from timestamp.tsa import TimestampAuthority

    with coded_errors():
        authority = TimestampAuthority.create(directory, name, now())
    click.echo(f"TSA certificate: {authority.cert_path}")


@tsa.command("serve")
@dir_option
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=8899, show_default=True)
def tsa_serve(directory: Path, host: str, port: int) -> None:
    """Answer RFC 3161 requests until interrupted."""
    from timestamp.tsa import serve_tsa

    async def run() -> None:
        runner = await serve_tsa(directory, host, port)
        click.echo(f"TSA serving on http://{host}:{port}/")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    _serve(run())


# -- security server ---------------------------------------------------------------


@main.group()
def server() -> None:
    """Security server: init, keys and certificates, clients, services, serve."""


def _pin(pin: str | None) -> str:
    value = pin or os.environ.get(PIN_ENV)
    if value:
        return value
    # A background process would otherwise block on (or echo) the prompt.
    if not sys.stdin.isatty():
        raise click.UsageError(f"no token PIN: pass --pin or set ${PIN_ENV}")
    return str(click.prompt("Token PIN", hide_input=True))


pin_option = click.option("--pin", default=None, help=f"Token PIN (or ${PIN_ENV}).")


def _settings(directory: Path) -> ServerSettings:
    from security_server.settings import SETTINGS_FILE, ServerSettings

    if not (directory / SETTINGS_FILE).is_file():
        raise click.ClickException(
            f"{directory} is not a security server; run 'xgate server init' first"
        )
    with coded_errors():
        return ServerSettings.load(directory)


def _serverconf(directory: Path):  # type: ignore[no-untyped-def]
    from security_server.serverconf import ServerConf

    return contextlib.closing(ServerConf(directory))


@server.command("init")
@dir_option
@click.option("--anchor", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--owner", required=True, help="Owner member CLASS/CODE.")
@click.option("--code", "server_code", required=True, help="Server code.")
@click.option("--bind", default="0.0.0.0", show_default=True)
@click.option("--client-port", default=8080, show_default=True)
@click.option("--server-port", default=5500, show_default=True)
@click.option("--ocsp-port", default=5577, show_default=True)
@pin_option
def server_init(
    directory: Path,
    anchor: Path,
    owner: str,
    server_code: str,
    bind: str,
    client_port: int,
    server_port: int,
    ocsp_port: int,
    pin: str | None,
) -> None:
    """Create a security server from a configuration anchor; write its CSRs.

    The central server must be serving: the global configuration the anchor
    points to is downloaded and verified first.
    """
    from protocol.anchor import parse_anchor
    from security_server.server import init_server
    from security_server.settings import Ports

    data = anchor.read_bytes()
    with coded_errors():
        instance = parse_anchor(data).instance
        result = asyncio.run(
            init_server(
                directory,
                data,
                owner=_member(instance, owner),
                server_code=server_code,
                pin=_pin(pin),
                bind_host=bind,
                ports=Ports(
                    client_http=client_port, server_proxy=server_port, ocsp=ocsp_port
                ),
            )
        )
    click.echo(
        f"security server {result.settings.server_id} initialised in {directory}"
    )
    click.echo(f"authentication CSR: {result.auth_csr}")
    click.echo(f"signing CSR:        {result.sign_csr}")


@server.command("cert-import")
@dir_option
@click.argument("cert_file", type=click.Path(exists=True, path_type=Path))
@pin_option
def server_cert_import(directory: Path, cert_file: Path, pin: str | None) -> None:
    """Import a certificate issued for one of this server's keys."""
    from security_server.token import SoftToken

    with coded_errors():
        token = SoftToken(directory / "token")
        token.login(_pin(pin))
        token.import_certificate(cert_file.read_bytes())
    click.echo(f"imported {cert_file}")


@server.command("anchor-import")
@dir_option
@click.argument("anchor_file", type=click.Path(exists=True, path_type=Path))
def server_anchor_import(directory: Path, anchor_file: Path) -> None:
    """Replace the configuration anchor, once a configuration verifies with it.

    The anchor must be for this server's instance; if the configuration it
    points to cannot be downloaded and verified, the stored anchor stays.
    """
    from security_server.confclient import anchor_fingerprint, import_anchor
    from security_server.server import ANCHOR_FILE

    settings = _settings(directory)
    data = anchor_file.read_bytes()
    with coded_errors():
        asyncio.run(
            import_anchor(
                directory / ANCHOR_FILE,
                data,
                instance=settings.instance,
            )
        )
    click.echo(f"anchor imported, fingerprint {anchor_fingerprint(data)}")


@server.command("register")
@dir_option
@click.option(
    "--client", default=None, help="Register this CLASS/CODE/SUB instead (clientReg)."
)
@click.option("--address", default=None, help="host[:port] peers use to reach us.")
@pin_option
def server_register(
    directory: Path, client: str | None, address: str | None, pin: str | None
) -> None:
    """Ask the central server to register our auth cert, or a client."""
    from security_server.management import register_server

    settings = _settings(directory)
    client_id = _subsystem(settings.instance, client) if client else None
    with coded_errors():
        request_id = asyncio.run(
            register_server(directory, _pin(pin), client=client_id, address=address)
        )
    what = f"client {client_id}" if client_id else "authentication certificate"
    click.echo(f"registration of {what} submitted as request {request_id}")


@server.command("unregister-client")
@dir_option
@click.argument("client")
@pin_option
def server_unregister_client(directory: Path, client: str, pin: str | None) -> None:
    """Ask the central server to remove CLIENT (CLASS/CODE/SUB) from this server."""
    from security_server.management import unregister_client

    settings = _settings(directory)
    client_id = _subsystem(settings.instance, client)
    with coded_errors():
        request_id = asyncio.run(unregister_client(directory, _pin(pin), client_id))
    click.echo(f"deletion of client {client_id} done as request {request_id}")


@server.command("client-add")
@dir_option
@click.argument("client")
def server_client_add(directory: Path, client: str) -> None:
    """Add a local client CLASS/CODE[/SUBSYSTEM]."""
    settings = _settings(directory)
    client_id = _client(settings.instance, client)
    with coded_errors(), _serverconf(directory) as serverconf:
        serverconf.add_client(client_id)
    click.echo(f"client {client_id} added")


@server.command("message-body-logging")
@dir_option
@click.argument("client")
@click.argument("state", type=click.Choice(["on", "off"]))
def server_message_body_logging(directory: Path, client: str, state: str) -> None:
    """Log message bodies for CLIENT, or not (message-log.md §1).

    With "off", the client's records keep no SOAP body, REST body, path or
    query, and their signatures can no longer be verified. This overrides
    log_bodies in server.json for CLIENT; a running server sees it at once.
    """
    settings = _settings(directory)
    client_id = _client(settings.instance, client)
    with coded_errors(), _serverconf(directory) as serverconf:
        serverconf.set_message_body_logging(client_id, state == "on")
    click.echo(f"message body logging {state} for {client_id}")


@server.command("service-add")
@dir_option
@click.option(
    "--provider", required=True, help="CLASS/CODE/SUBSYSTEM offering the service."
)
@click.option("--code", "service_code", required=True)
@click.option("--version", "service_version", default=None)
@click.option("--kind", type=click.Choice(["SOAP", "REST"]), required=True)
@click.option(
    "--url", required=True, help="Address of the service in the provider's network."
)
@click.option("--timeout", default=60, show_default=True)
@click.option(
    "--description-url", default=None, help="Where the WSDL or OpenAPI document is."
)
def server_service_add(
    directory: Path,
    provider: str,
    service_code: str,
    service_version: str | None,
    kind: str,
    url: str,
    timeout: int,
    description_url: str | None,
) -> None:
    """Add a service of a local client."""
    settings = _settings(directory)
    service_id = ServiceId(
        _client(settings.instance, provider), service_code, service_version
    )
    with coded_errors(), _serverconf(directory) as serverconf:
        serverconf.add_service(
            service_id,
            kind=kind,
            url=url,
            timeout=timeout,
            description_url=description_url,
        )
    click.echo(f"{kind} service {service_id} added")


@server.command("service-add-wsdl")
@dir_option
@click.option(
    "--provider", required=True, help="CLASS/CODE/SUBSYSTEM offering the services."
)
@click.option("--wsdl", "source", required=True, help="URL or file of the WSDL.")
@click.option(
    "--url",
    "service_url",
    default=None,
    help="Service address (default: soap:address).",
)
def server_service_add_wsdl(
    directory: Path, provider: str, source: str, service_url: str | None
) -> None:
    """Add one SOAP service per operation of a WSDL (all or none)."""
    from security_server.descriptions import add_wsdl_services

    settings = _settings(directory)
    provider_id = _client(settings.instance, provider)
    with coded_errors(), _serverconf(directory) as serverconf:
        configs = asyncio.run(
            add_wsdl_services(serverconf, provider_id, source, service_url=service_url)
        )
    for config in configs:
        click.echo(f"SOAP service {config.service_id} added, url {config.url}")


@server.command("service-add-openapi")
@dir_option
@click.option(
    "--provider", required=True, help="CLASS/CODE/SUBSYSTEM offering the service."
)
@click.option("--code", "service_code", required=True)
@click.option(
    "--openapi", "source", required=True, help="URL or file of the OpenAPI 3 document."
)
@click.option("--url", "service_url", required=True, help="Base address of the API.")
def server_service_add_openapi(
    directory: Path, provider: str, service_code: str, source: str, service_url: str
) -> None:
    """Add a REST service and its endpoints from an OpenAPI 3.0/3.1 document."""
    from security_server.descriptions import add_openapi_service

    settings = _settings(directory)
    provider_id = _client(settings.instance, provider)
    with coded_errors(), _serverconf(directory) as serverconf:
        config, endpoints = asyncio.run(
            add_openapi_service(
                serverconf, provider_id, service_code, source, service_url
            )
        )
    click.echo(f"REST service {config.service_id} added, url {config.url}")
    for endpoint in endpoints:
        click.echo(f"  endpoint {endpoint.method} {endpoint.path}")


@server.command("acl-add")
@dir_option
@click.option("--provider", required=True)
@click.option("--code", "service_code", required=True)
@click.option(
    "--subject", required=True, help="Client CLASS/CODE[/SUBSYSTEM] granted access."
)
@click.option("--method", default="*", show_default=True)
@click.option("--path", default="**", show_default=True)
def server_acl_add(
    directory: Path,
    provider: str,
    service_code: str,
    subject: str,
    method: str,
    path: str,
) -> None:
    """Grant a client access to a service (REST: per method and path glob)."""
    settings = _settings(directory)
    service_id = ServiceId(_client(settings.instance, provider), service_code)
    subject_id = _client(settings.instance, subject)
    with coded_errors(), _serverconf(directory) as serverconf:
        serverconf.grant(service_id, subject_id, method=method, path=path)
    click.echo(f"{subject_id} may call {service_id} ({method} {path})")


@server.command("serve")
@dir_option
@pin_option
def server_serve(directory: Path, pin: str | None) -> None:
    """Run the client proxy, server proxy and OCSP responder until interrupted."""
    from security_server.server import SecurityServer

    async def run(secret: str) -> None:
        node = SecurityServer(directory, secret)
        await node.start()
        click.echo(f"security server {node.settings.server_id} serving")
        try:
            await asyncio.Event().wait()
        finally:
            await node.stop()

    _serve(run(_pin(pin)))


# -- demo ----------------------------------------------------------------------------


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep all state here instead of a temporary directory.",
)
@click.option(
    "--serve", is_flag=True, help="Stay up after the story; write DIR/demo.json."
)
def demo(directory: Path | None, serve: bool) -> None:
    """Start a whole ecosystem, make a SOAP and a REST call, show the evidence."""
    from demo.ecosystem import build_ecosystem
    from demo.story import demo_json, tell_serving, tell_story

    async def run(base: Path) -> bool:
        ecosystem = await build_ecosystem(base)
        try:
            ok = await tell_story(ecosystem, click.echo)
            if serve:
                path = base / "demo.json"
                path.write_text(json.dumps(demo_json(ecosystem), indent=2) + "\n")
                tell_serving(ecosystem, path, click.echo)
                await asyncio.Event().wait()
            return ok
        finally:
            await ecosystem.stop()

    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="xgate-demo-"))
            )
        else:
            directory.mkdir(parents=True, exist_ok=True)
            if any(directory.iterdir()):
                raise click.ClickException(f"{directory} is not empty")
        try:
            with coded_errors():
                ok = asyncio.run(run(directory))
        except KeyboardInterrupt:
            ok = True
    sys.exit(0 if ok else 1)


def _load_cert(data: bytes) -> x509.Certificate:
    from protocol.pki import load_certificate

    return load_certificate(data)


def _register_groups() -> None:
    from cli.archive import register as register_archive
    from cli.log import log

    register_archive(log)
    main.add_command(log)


_register_groups()

if __name__ == "__main__":
    main()
