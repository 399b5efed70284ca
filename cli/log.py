"""CLI: ``xgate log`` -- find and export logged messages, verify containers.

``find`` and ``export`` read a security server's data directory (its
``messagelog.db``); ``verify`` is the auditor's tool (message-log.md §8) and
needs only a configuration directory and the ``.asice`` files.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click

from cli.errors import coded_errors
from protocol.auditor import (
    failure_report,
    has_body_not_logged_marker,
    verify_container,
)
from protocol.errors import XRoadError
from protocol.globalconf import GlobalConf
from protocol.identifiers import ClientId, ServiceId
from security_server.confclient import load_conf_dir
from security_server.logexport import (
    RecordQuery,
    export_containers,
    find_records,
    open_message_log,
)
from security_server.messagelog import StoredRecord
from security_server.settings import ServerSettings

# More containers than this get a progress bar; reports then follow it.
PROGRESS_THRESHOLD = 5
CONF_SUBDIR = "globalconf"
BODY_NOT_LOGGED = "body-not-logged"


def _identifier_parts(text: str, sizes: tuple[int, ...], form: str) -> list[str]:
    parts = text.split("/")
    if len(parts) not in sizes or not all(parts):
        raise click.BadParameter(f"expected {form}, got {text!r}")
    return parts


def _time(text: str | None) -> datetime | None:
    """ISO 8601; a time without zone is UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _query(
    directory: Path,
    query_id: str | None,
    since: str | None,
    until: str | None,
    client: str | None,
    service: str | None,
) -> RecordQuery:
    instance = ServerSettings.load(directory).instance if client or service else ""
    client_id = None
    if client:
        parts = _identifier_parts(client, (2, 3), "CLASS/CODE[/SUBSYSTEM]")
        client_id = ClientId(instance, *parts)
    service_id = None
    if service:
        form = "CLASS/CODE/SUBSYSTEM/SERVICE[/VERSION]"
        parts = _identifier_parts(service, (4, 5), form)
        provider = ClientId(instance, *parts[:3])
        service_id = ServiceId(provider, parts[3], parts[4] if len(parts) > 4 else None)
    return RecordQuery(query_id, _time(since), _time(until), client_id, service_id)


async def _find(directory: Path, query: RecordQuery, limit: int) -> list[StoredRecord]:
    message_log = open_message_log(directory)
    try:
        return await find_records(message_log, query, limit=limit)
    finally:
        message_log.close()


async def _export(
    directory: Path, query: RecordQuery, limit: int
) -> list[tuple[str, bytes]]:
    message_log = open_message_log(directory)
    try:
        return await export_containers(message_log, query, limit=limit)
    finally:
        message_log.close()


dir_option = click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Data directory of the security server.",
)
filter_options = [
    click.option("--query-id", default=None, help="Only this query id."),
    click.option("--since", default=None, help="From this time (ISO 8601, UTC)."),
    click.option("--until", default=None, help="Before this time (ISO 8601, UTC)."),
    click.option("--client", default=None, help="Client CLASS/CODE[/SUBSYSTEM]."),
    click.option(
        "--service", default=None, help="Service CLASS/CODE/SUBSYSTEM/SERVICE[/VER]."
    ),
    click.option("--limit", default=100_000, show_default=True, help="Records read."),
]


def _filters(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(filter_options):
        command = option(command)
    return command


@click.group()
def log() -> None:
    """Message log: find records, export ASiC-E containers, verify them."""


@log.command("find")
@dir_option
@_filters
def log_find(directory: Path, limit: int, **filters: str | None) -> None:
    """List logged messages, oldest first."""
    with coded_errors():
        query = _query(directory, **filters)
        records = asyncio.run(_find(directory, query, limit))
    for record in records:
        kind = "response" if record.response else "request"
        stamped = "stamped" if record.timestamp_token else "unstamped"
        # A last column only for records logged without their body (§1).
        note = "" if record.body_logged else f"\t{BODY_NOT_LOGGED}"
        click.echo(
            f"{record.id}\t{record.time.isoformat()}\t{record.query_id}\t{kind}\t"
            f"{record.client.slash()}\t{record.service.slash()}\t{stamped}{note}"
        )
    click.echo(f"{len(records)} record(s)", err=True)


@log.command("export")
@dir_option
@_filters
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory for the .asice files.",
)
def log_export(directory: Path, limit: int, out: Path, **filters: str | None) -> None:
    """Write matching records as .asice containers; every one must be stamped."""
    if not any(filters.values()):
        raise click.UsageError(
            "give --query-id, --since/--until, --client or --service"
        )
    with coded_errors():
        query = _query(directory, **filters)
        exported = asyncio.run(_export(directory, query, limit))
        if not exported:
            raise click.ClickException("no matching records")
        out.mkdir(parents=True, exist_ok=True)
        for name, data in exported:
            (out / name).write_bytes(data)
            note = ""
            if has_body_not_logged_marker(data):
                note = f"\t{BODY_NOT_LOGGED}: its signature cannot verify"
            click.echo(f"{out / name}{note}")


def load_verification_conf(path: Path) -> GlobalConf:
    """A configuration directory, or a server data directory's ``globalconf/``."""
    if (path / CONF_SUBDIR).is_dir() and not (path / "instance-identifier").exists():
        path = path / CONF_SUBDIR
    return load_conf_dir(path)


@log.command("verify")
@click.option(
    "--conf",
    "conf_path",
    required=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Configuration directory (or a server data directory's globalconf/).",
)
@click.argument(
    "containers",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
)
def log_verify(conf_path: Path, containers: tuple[Path, ...]) -> None:
    """Verify .asice containers; exit 1 unless every one verifies."""
    with coded_errors():
        conf = load_verification_conf(conf_path)

    reports: list[tuple[Path, bool, str]] = []
    if len(containers) > PROGRESS_THRESHOLD:
        with click.progressbar(containers, label="Verifying", file=sys.stderr) as bar:
            reports = [_verify_one(path, conf) for path in bar]
    else:
        reports = [_verify_one(path, conf) for path in containers]

    for path, _, text in reports:
        click.echo(f"== {path}")
        click.echo(text)
    failed = sum(1 for _, ok, _ in reports if not ok)
    click.echo(f"{len(reports) - failed} verified, {failed} failed", err=True)
    if failed:
        sys.exit(1)


def _verify_one(path: Path, conf: GlobalConf) -> tuple[Path, bool, str]:
    try:
        verdict = verify_container(path.read_bytes(), conf)
    except XRoadError as err:
        return path, False, failure_report(err)
    except OSError as err:
        return path, False, f"Verification failed: {err}"
    return path, True, verdict.report()
