"""CLI: ``xgate log archive`` and ``verify-archive`` (message-log.md §7, §9).

``archive`` packs a server's stamped records into hash-linked archives;
``verify-archive`` is the auditor's check of one archive's digest chain. The
``log`` group picks both up through :func:`register`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import click

from cli.errors import coded_errors
from protocol.archive import verify_archive
from security_server.archiver import DEFAULT_MAX_BYTES, Grouping, archive_records
from security_server.logexport import open_message_log

# An archive is read whole; refuse files far beyond the rotation size.
MAX_ARCHIVE_FILE_BYTES = 4 * 1024 * 1024 * 1024


async def _archive(
    directory: Path, out: Path, grouping: Grouping, max_bytes: int
) -> list[Path]:
    message_log = open_message_log(directory)
    try:
        return await archive_records(
            message_log,
            out,
            group=grouping,
            max_bytes=max_bytes,
            now=datetime.now(UTC),
        )
    finally:
        message_log.close()


@click.command("archive")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Data directory of the security server.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Archive directory; it also keeps each chain's last link.",
)
@click.option(
    "--grouping",
    type=click.Choice([g.value for g in Grouping]),
    default=Grouping.NONE.value,
    show_default=True,
    help="One digest chain for all records, per member or per subsystem.",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BYTES,
    show_default=True,
    help="Start a new archive once the containers would exceed this size.",
)
def log_archive(directory: Path, out: Path, grouping: str, max_bytes: int) -> None:
    """Write stamped, unarchived records into hash-linked archive ZIPs."""
    with coded_errors():
        written = asyncio.run(_archive(directory, out, Grouping(grouping), max_bytes))
    for path in written:
        click.echo(str(path))
    click.echo(f"{len(written)} archive(s) written", err=True)


@click.command("verify-archive")
@click.argument("archive", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--previous",
    default=None,
    help="Last digest of the previous archive in the chain (hex).",
)
@click.option(
    "--first", is_flag=True, help="The archive starts a chain: no previous digest."
)
def log_verify_archive(archive: Path, previous: str | None, first: bool) -> None:
    """Check an archive's digest chain and print its last digest."""
    if first == (previous is not None):
        raise click.UsageError("give exactly one of --previous DIGEST or --first")
    with coded_errors():
        if archive.stat().st_size > MAX_ARCHIVE_FILE_BYTES:
            raise click.ClickException(
                f"{archive} is larger than {MAX_ARCHIVE_FILE_BYTES} bytes"
            )
        verdict = verify_archive(archive.read_bytes(), None if first else previous)
    click.echo(verdict.last_digest)
    click.echo(
        f"{len(verdict.names)} container(s) verified ({verdict.algorithm})", err=True
    )


def register(log_group: click.Group) -> None:
    """Add ``archive`` and ``verify-archive`` to the ``xgate log`` group."""
    log_group.add_command(log_archive)
    log_group.add_command(log_verify_archive)
