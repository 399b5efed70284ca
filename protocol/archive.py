"""Core: message-log archives and their digest chain (message-log.md §7, §9).

An archive is a ZIP of ASiC-E containers plus a final ``linkinginfo`` entry.
Each container's digest is folded into a running digest, and the first line
of ``linkinginfo`` quotes the last digest of the group's previous archive, so
archives form one hash-linked chain per group::

    c_i = hex(H(container i))     D_0 = previous D_last, or "" at the start
    D_i = hex(H(UTF-8(D_{i-1} + c_i)))

Building and verifying work on bytes only; writing files and keeping the
previous link is the archiver's job (``security_server/archiver.py``).
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from .errors import XRoadError

LINKING_INFO = "linkinginfo"
CONTAINER_SUFFIX = ".asice"
DEFAULT_ALGORITHM = "SHA-512"
# §9: the archive verifier knows these; SHA-1 is left out on purpose.
ALGORITHMS = {"SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}

# The reference writes DEFLATE at level 0: entries are effectively stored.
COMPRESS_LEVEL = 0
# §7: the "<group>-" piece of a file name is cut to this many characters.
MAX_GROUP_CHARS = 200
# An archive comes from outside: bound the text we read and the entry count.
MAX_LINKING_INFO_BYTES = 16 * 1024 * 1024
MAX_ENTRIES = 1_000_000

_HEX = re.compile(r"[0-9a-f]+")
# NUL, \ / : * ? < > | and control characters become "_" in a file name (§7).
_UNSAFE_GROUP_CHARS = re.compile(r'[\x00-\x1f\x7f\\/:*?<>|"]')
_NAME_TIME = "%Y%m%d%H%M%S"


# -- errors (§9: any mismatch fails the archive) -------------------------------


class ArchiveError(XRoadError, ValueError):
    """The archive or its inputs are unusable; the subclass says why."""

    code: ClassVar[str] = "InvalidArchive"


class InvalidArchive(ArchiveError):
    code = "InvalidArchive"  # not a ZIP, unreadable entry, bad build input


class LinkingInfoNotFound(ArchiveError):
    code = "ArchiveLinkingInfoNotFound"


class MalformedLinkingInfo(ArchiveError):
    code = "ArchiveMalformedLinkingInfo"


class UnsupportedArchiveAlgorithm(ArchiveError):
    code = "ArchiveUnsupportedAlgorithm"


class PreviousDigestMismatch(ArchiveError):
    code = "ArchivePreviousDigestMismatch"


class ArchiveEntriesMismatch(ArchiveError):
    code = "ArchiveEntriesMismatch"  # container names differ from linkinginfo


class ContainerDigestMismatch(ArchiveError):
    code = "ArchiveDigestMismatch"


# -- value objects -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkingInfo:
    """The parsed ``linkinginfo`` entry; ``previous_digest`` is "" for a first."""

    previous_digest: str
    previous_name: str | None
    algorithm: str
    links: tuple[tuple[str, str], ...]  # (D_i, container name), in file order


@dataclass(frozen=True, slots=True)
class ArchiveVerdict:
    """A verified archive: pass ``last_digest`` when verifying the next one."""

    last_digest: str
    names: tuple[str, ...]  # container names in ZIP order
    algorithm: str = DEFAULT_ALGORITHM


# -- the digest chain ----------------------------------------------------------


def _hash_name(algorithm: str) -> str:
    try:
        return ALGORITHMS[algorithm]
    except KeyError:
        raise UnsupportedArchiveAlgorithm(
            f"archive digest algorithm {algorithm!r} is not supported; "
            f"expected one of {sorted(ALGORITHMS)}"
        ) from None


def chain_digest(previous: str, container_digest: str, algorithm: str) -> str:
    """``D_i = hex(H(UTF-8(D_{i-1} + c_i)))`` (§7)."""
    data = (previous + container_digest).encode("utf-8")
    return hashlib.new(_hash_name(algorithm), data).hexdigest()


# -- building ------------------------------------------------------------------


def build_archive(
    containers: Sequence[tuple[str, bytes]],
    previous_digest: str | None,
    previous_name: str | None,
    algorithm: str = DEFAULT_ALGORITHM,
    *,
    time: datetime | None = None,
) -> tuple[bytes, str]:
    """Build an archive ZIP; return its bytes and its last digest ``D_last``.

    :param containers: ``(file name, .asice bytes)`` in archive order.
    :param previous_digest: ``D_last`` of the group's previous archive, or
        ``None`` for the first archive of a chain.
    :param time: mtime of every entry (UTC); 1980-01-01 when not given.
    :raises ArchiveError: no containers, a bad or repeated name, or an
        unsupported algorithm.
    """
    hash_name = _hash_name(algorithm)
    _check_build_input(containers, previous_digest, previous_name)

    chain = previous_digest or ""
    lines = [f"{previous_digest or '-'} {previous_name or '-'} {algorithm}"]
    for name, data in containers:
        chain = chain_digest(chain, hashlib.new(hash_name, data).hexdigest(), algorithm)
        lines.append(f"{chain} {name}")
    linking_info = "".join(line + "\n" for line in lines).encode("utf-8")

    stamp = _zip_time(time)
    buffer = io.BytesIO()
    with zipfile.ZipFile(
        buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL
    ) as archive:
        for name, data in [*containers, (LINKING_INFO, linking_info)]:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=COMPRESS_LEVEL)
    return buffer.getvalue(), chain


def _check_build_input(
    containers: Sequence[tuple[str, bytes]],
    previous_digest: str | None,
    previous_name: str | None,
) -> None:
    if not containers:
        raise InvalidArchive("an archive needs at least one container")
    if previous_digest is not None and not _HEX.fullmatch(previous_digest):
        raise InvalidArchive(
            f"previous digest must be lower-case hex, got {previous_digest!r}"
        )
    if previous_name is not None and not _plain_name(previous_name):
        raise InvalidArchive(f"previous archive name {previous_name!r} is unusable")
    seen: set[str] = set()
    for name, _ in containers:
        if not name.endswith(CONTAINER_SUFFIX) or not _plain_name(name):
            raise InvalidArchive(f"container name {name!r} is not a plain .asice name")
        if name in seen:
            raise InvalidArchive(f"container name {name!r} appears twice")
        seen.add(name)


def _plain_name(name: str) -> bool:
    # linkinginfo separates fields by spaces and lines by "\n".
    return bool(name) and name != "-" and not any(c.isspace() for c in name)


def _zip_time(moment: datetime | None) -> tuple[int, int, int, int, int, int]:
    if moment is None:
        return (1980, 1, 1, 0, 0, 0)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    moment = max(moment, datetime(1980, 1, 1))
    return (
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
    )


def archive_file_name(
    group: str | None, first: datetime, last: datetime, last_digest: str
) -> str:
    """``mlog-[<group>-]<first>-<last>-<D_last[:16]>.zip`` (§7).

    Times are written in UTC (the reference uses the server's zone, §10);
    ``group`` is a short id such as ``INST/GOV/1234[/SUB]``, or ``None``
    when archives are not grouped.
    """
    if not _HEX.fullmatch(last_digest):
        raise InvalidArchive(f"last digest must be lower-case hex: {last_digest!r}")
    parts = ["mlog"]
    if group:
        parts.append(_UNSAFE_GROUP_CHARS.sub("_", group)[:MAX_GROUP_CHARS])
    parts += [_name_time(first), _name_time(last), last_digest[:16]]
    return "-".join(parts) + ".zip"


def _name_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("archive name times must be timezone-aware")
    return moment.astimezone(UTC).strftime(_NAME_TIME)


# -- verifying (§9) ------------------------------------------------------------


def parse_linking_info(text: bytes) -> LinkingInfo:
    """Parse ``linkinginfo``: a header line, then one ``D_i name`` line each.

    :raises MalformedLinkingInfo: not UTF-8 or a line of the wrong shape.
    :raises UnsupportedArchiveAlgorithm: the header names another algorithm.
    """
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise MalformedLinkingInfo(f"linkinginfo is not UTF-8: {exc}") from exc
    if not lines:
        raise MalformedLinkingInfo("linkinginfo is empty")

    header = lines[0].split(" ")
    if len(header) != 3:
        raise MalformedLinkingInfo(f"linkinginfo header is {lines[0][:200]!r}")
    previous, previous_name, algorithm = header
    _hash_name(algorithm)
    previous = "" if previous == "-" else previous.lower()
    if previous and not _HEX.fullmatch(previous):
        raise MalformedLinkingInfo(f"previous digest {previous[:200]!r} is not hex")

    links: list[tuple[str, str]] = []
    for number, line in enumerate(lines[1:], 2):
        fields = line.split(" ", 1)
        if len(fields) != 2 or not _HEX.fullmatch(fields[0].lower()) or not fields[1]:
            raise MalformedLinkingInfo(
                f"linkinginfo line {number} is {line[:200]!r}, not 'digest name'"
            )
        links.append((fields[0].lower(), fields[1]))
    return LinkingInfo(
        previous_digest=previous,
        previous_name=None if previous_name == "-" else previous_name,
        algorithm=algorithm,
        links=tuple(links),
    )


def verify_archive(zip_bytes: bytes, previous_digest: str | None) -> ArchiveVerdict:
    """Check an archive's digest chain (§9 steps 1-4) and return ``D_last``.

    :param previous_digest: ``D_last`` of the previous archive in the chain,
        or ``None`` for the first archive (the ``--first`` mode).
    :raises ArchiveError: the subclass names the first failed step.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidArchive(f"not a ZIP archive: {exc}") from exc

    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(infos) > MAX_ENTRIES:
            raise InvalidArchive(
                f"archive has {len(infos)} entries, over {MAX_ENTRIES}"
            )
        linking = _read_linking_info(archive, infos)
        expected = "" if previous_digest is None else previous_digest.lower()
        if linking.previous_digest != expected:
            raise PreviousDigestMismatch(
                f"linkinginfo starts from {linking.previous_digest or '-'!r}, "
                f"expected {expected or '-'!r}"
            )

        containers = [i for i in infos if i.filename.endswith(CONTAINER_SUFFIX)]
        names = [info.filename for info in containers]
        _check_names(names, [name for _, name in linking.links])

        recorded = {name: digest for digest, name in linking.links}
        chain = linking.previous_digest
        for info in containers:
            chain = chain_digest(
                chain,
                _entry_digest(archive, info, linking.algorithm),
                linking.algorithm,
            )
            listed = recorded[info.filename]
            if chain != listed:
                raise ContainerDigestMismatch(
                    f"digest chain breaks at {info.filename!r}: computed "
                    f"{chain[:16]}..., linkinginfo has {listed[:16]}..."
                )
    return ArchiveVerdict(chain, tuple(names), linking.algorithm)


def _read_linking_info(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]
) -> LinkingInfo:
    found = [info for info in infos if info.filename == LINKING_INFO]
    if not found:
        raise LinkingInfoNotFound("archive has no linkinginfo entry")
    if len(found) > 1:
        raise MalformedLinkingInfo("archive has more than one linkinginfo entry")
    if found[0].file_size > MAX_LINKING_INFO_BYTES:
        raise MalformedLinkingInfo(
            f"linkinginfo is {found[0].file_size} bytes, over {MAX_LINKING_INFO_BYTES}"
        )
    return parse_linking_info(_read(archive, found[0]))


def _check_names(in_zip: list[str], in_linking: list[str]) -> None:
    if len(set(in_zip)) != len(in_zip):
        raise ArchiveEntriesMismatch("archive holds a container name more than once")
    if len(set(in_linking)) != len(in_linking):
        raise ArchiveEntriesMismatch("linkinginfo lists a container more than once")
    missing = sorted(set(in_linking) - set(in_zip))
    extra = sorted(set(in_zip) - set(in_linking))
    if missing or extra:
        raise ArchiveEntriesMismatch(
            f"containers differ from linkinginfo: not in the archive {missing[:5]!r}, "
            f"not in linkinginfo {extra[:5]!r}"
        )


def _entry_digest(archive: zipfile.ZipFile, info: zipfile.ZipInfo, alg: str) -> str:
    # The archive is in memory already; a container is at most as large.
    return hashlib.new(_hash_name(alg), _read(archive, info)).hexdigest()


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InvalidArchive(f"entry {info.filename!r} is unreadable: {exc}") from exc
