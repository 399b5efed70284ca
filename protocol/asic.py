"""Core: message-log ASiC-E containers (message-log.md §6, §8 step 1).

A container is a ZIP held in memory: the logged message, its signature (with
the single timestamp inside, or a batch timestamp beside it), the hash-chain
files and the logged bodies. Building follows the reference writer's entry
order and naming; reading accepts any order, compression or ZIP comment and
runs the structural checks of the auditor's verifier, in its order.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import quote_plus

from lxml import etree

from .digests import SHA512_URI, b64, digest
from .errors import ClientRequestError, MalformedSignature, XRoadError
from .xml import parse_xml

MIME_TYPE = "application/vnd.etsi.asic-e+zip"
ZIP_COMMENT = b"mimetype=" + MIME_TYPE.encode("ascii")

ENTRY_MIMETYPE = "mimetype"
ENTRY_MESSAGE = "message.xml"
ENTRY_SIGNATURE = "META-INF/signatures.xml"
ENTRY_SIG_HASH_CHAIN_RESULT = "sig-hashchainresult.xml"
ENTRY_SIG_HASH_CHAIN = "sig-hashchain.xml"
ENTRY_TS_HASH_CHAIN_RESULT = "ts-hashchainresult.xml"
ENTRY_TS_HASH_CHAIN = "ts-hashchain.xml"
ENTRY_MANIFEST = "META-INF/manifest.xml"
ENTRY_ASIC_MANIFEST = "META-INF/ASiCManifest.xml"
ENTRY_TIMESTAMP = "META-INF/timestamp.tst"
ATTACHMENT_PREFIX = "attachment"

XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
MANIFEST_NS = "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"
# The ASiC manifest namespace really lacks the leading zero of the
# signature's 02918 (message-log.md §10): an upstream slip we copy.
ASIC_MANIFEST_NS = "http://uri.etsi.org/2918/v1.2.1#"

# A container comes from outside: refuse ZIP bombs and absurd entry counts.
MAX_CONTAINER_BYTES = 256 * 1024 * 1024
MAX_ENTRIES = 10_000
# Container names keep at most this much of the URL-encoded query id (§6).
MAX_QUERY_ID_CHARS = 226

_ATTACHMENT = re.compile(r"attachment([1-9][0-9]*)")
_BASE32_DIGITS = "0123456789abcdefghijklmnopqrstuv"


# -- errors (§8 step 1, reference codes in classic spelling) ------------------


class AsicError(XRoadError, ValueError):
    """The bytes are not a well-formed message-log container."""

    code: ClassVar[str] = "AsicMimeTypeNotFound"


class AsicMimeTypeNotFound(AsicError):
    code = "AsicMimeTypeNotFound"  # also for input that is not a ZIP at all


class AsicInvalidMimeType(AsicError):
    code = "AsicInvalidMimeType"


class AsicMessageNotFound(AsicError):
    code = "AsicMessageNotFound"


class AsicSignatureNotFound(AsicError):
    code = "AsicSignatureNotFound"


class AsicHashChainResultNotFound(AsicError):
    code = "AsicHashChainResultNotFound"


class AsicHashChainNotFound(AsicError):
    code = "AsicHashChainNotFound"


class AsicTimestampNotFound(AsicError):
    code = "AsicTimestampNotFound"


class AsicManifestNotFound(AsicError):
    code = "AsicManifestNotFound"


# -- the container -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ASiCContainer:
    """The parts of one logged message, as they sit in a container.

    ``timestamp`` is a batch token (``META-INF/timestamp.tst``); a single
    timestamp lives inside ``signature``. ``attachments`` maps entry names
    (``attachment1`` ...) to raw bytes, in order.
    """

    message: bytes
    signature: bytes
    sig_hash_chain_result: bytes | None = None
    sig_hash_chain: bytes | None = None
    ts_hash_chain_result: bytes | None = None
    ts_hash_chain: bytes | None = None
    timestamp: bytes | None = None
    attachments: Mapping[str, bytes] = field(default_factory=dict)
    manifest: bytes | None = None
    asic_manifest: bytes | None = None

    @property
    def attachment_digests(self) -> dict[str, bytes]:
        """``/attachmentN`` -> SHA-512 of its bytes (what §8 step 1 computes)."""
        return {
            "/" + name: digest(body, SHA512_URI)
            for name, body in self.attachments.items()
        }


def build_asic(container: ASiCContainer, *, time: datetime) -> bytes:
    """Build the ZIP bytes of a container the way the reference writer does.

    Entries come in the §6 table order then attachments, all DEFLATED, each
    with ``time`` (the record time, written as UTC) as its mtime; the ZIP
    comment names the media type. Manifests are generated here.

    :raises AsicError: a hash-chain pair is incomplete or a name is not
        ``attachmentN``.
    """
    _check_pairs(container)
    for name in container.attachments:
        if not _ATTACHMENT.fullmatch(name):
            raise AsicError(f"attachment entry name {name!r} is not attachmentN")

    entries: list[tuple[str, bytes]] = [
        (ENTRY_MIMETYPE, MIME_TYPE.encode("ascii")),
        (ENTRY_MESSAGE, container.message),
        (ENTRY_SIGNATURE, container.signature),
    ]
    optional = (
        (ENTRY_SIG_HASH_CHAIN_RESULT, container.sig_hash_chain_result),
        (ENTRY_SIG_HASH_CHAIN, container.sig_hash_chain),
        (ENTRY_TS_HASH_CHAIN_RESULT, container.ts_hash_chain_result),
        (ENTRY_TS_HASH_CHAIN, container.ts_hash_chain),
    )
    entries += [(name, data) for name, data in optional if data is not None]
    names = [name for name, _ in entries if "/" not in name]
    names += list(container.attachments)
    entries.append((ENTRY_MANIFEST, build_manifest(names)))
    if container.timestamp is not None:
        if container.ts_hash_chain_result is None:
            raise AsicHashChainResultNotFound(
                "a batch timestamp needs ts-hashchainresult.xml"
            )
        entries.append(
            (ENTRY_ASIC_MANIFEST, build_asic_manifest(container.ts_hash_chain_result))
        )
        entries.append((ENTRY_TIMESTAMP, container.timestamp))
    entries += list(container.attachments.items())

    stamp = _zip_time(time)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.comment = ZIP_COMMENT
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def _zip_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    moment = max(moment.replace(tzinfo=None), datetime(1980, 1, 1))
    return (
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
    )


def _check_pairs(container: ASiCContainer) -> None:
    for result, chain in (
        (container.sig_hash_chain_result, container.sig_hash_chain),
        (container.ts_hash_chain_result, container.ts_hash_chain),
    ):
        if result is not None and chain is None:
            raise AsicHashChainNotFound("hash chain result without its hash chain")
        if chain is not None and result is None:
            raise AsicHashChainResultNotFound("hash chain without its result")


def build_manifest(names: list[str]) -> bytes:
    """The OpenDocument manifest: XML entries as text/xml, the rest octet-stream."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<manifest:manifest xmlns:manifest="{MANIFEST_NS}" manifest:version="1.2">',
        _file_entry(MIME_TYPE, "/"),
    ]
    for name in names:
        if name == ENTRY_MIMETYPE:
            continue
        media = "text/xml" if name.endswith(".xml") else "application/octet-stream"
        lines.append(_file_entry(media, name))
    lines.append("</manifest:manifest>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _file_entry(media_type: str, path: str) -> str:
    return (
        f'    <manifest:file-entry manifest:media-type="{media_type}" '
        f'manifest:full-path="{path}"/>'
    )


def build_asic_manifest(ts_hash_chain_result: bytes) -> bytes:
    """The ASiC manifest binding timestamp.tst to ts-hashchainresult.xml (SHA-512)."""
    value = b64(digest(ts_hash_chain_result, SHA512_URI))
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<asic:ASiCManifest xmlns:asic="{ASIC_MANIFEST_NS}" '
        'xmlns:ds="http://www.w3.org/2000/09/xmldsig#">',
        f'<asic:SigReference URI="{ENTRY_TIMESTAMP}" '
        'MimeType="vnd.etsi.timestamp-token"/>',
        f'<asic:DataObjectReference URI="{ENTRY_TS_HASH_CHAIN_RESULT}" '
        'MimeType="text/xml">',
        f'<ds:DigestMethod Algorithm="{SHA512_URI}" />',
        f"<ds:DigestValue>{value}</ds:DigestValue>",
        "</asic:DataObjectReference>",
        "</asic:ASiCManifest>",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def asic_file_name(query_id: str, response: bool, record_id: int) -> str:
    """``<urlenc(queryId)[:226]>-<request|response>-<id in base 32>.asice`` (§6)."""
    # Form encoding as Java's URLEncoder does it: "~" is escaped there too.
    encoded = quote_plus(query_id, safe="*").replace("~", "%7E")
    encoded = encoded[:MAX_QUERY_ID_CHARS]
    kind = "response" if response else "request"
    return f"{encoded}-{kind}-{_base32(record_id)}.asice"


def _base32(value: int) -> str:
    if value < 0:
        raise ValueError(f"record id must not be negative: {value!r}")
    digits = ""
    while True:
        value, rest = divmod(value, 32)
        digits = _BASE32_DIGITS[rest] + digits
        if value == 0:
            return digits


# -- reading -------------------------------------------------------------------


def parse_asic(data: bytes, *, max_bytes: int = MAX_CONTAINER_BYTES) -> ASiCContainer:
    """Read a container and run the structural checks of §8 step 1, in order.

    Entries are looked up by their exact canonical names; entry order,
    compression, directory entries and the ZIP comment do not matter.

    :raises AsicError: the subclass names the first failed check.
    :raises MalformedSignature: no timestamp anywhere.
    """
    entries = _read_entries(data, max_bytes)

    mimetype = entries.get(ENTRY_MIMETYPE)
    if not mimetype:
        raise AsicMimeTypeNotFound("container has no mimetype entry")
    if mimetype.decode("utf-8", "replace").lower() != MIME_TYPE:
        raise AsicInvalidMimeType(f"mimetype is {mimetype[:100]!r}, not {MIME_TYPE}")
    message = entries.get(ENTRY_MESSAGE)
    if not message:
        raise AsicMessageNotFound("container has no message.xml")
    signature = entries.get(ENTRY_SIGNATURE)
    if not signature:
        raise AsicSignatureNotFound(f"container has no {ENTRY_SIGNATURE}")
    sig_result, sig_chain = _chain_pair(
        entries, ENTRY_SIG_HASH_CHAIN_RESULT, ENTRY_SIG_HASH_CHAIN
    )

    timestamp = entries.get(ENTRY_TIMESTAMP)
    if timestamp is not None and not timestamp:
        raise AsicTimestampNotFound(f"{ENTRY_TIMESTAMP} is empty")
    if timestamp is None and not _has_signature_timestamp(signature):
        raise MalformedSignature("container carries no timestamp")
    ts_result, ts_chain = _chain_pair(
        entries, ENTRY_TS_HASH_CHAIN_RESULT, ENTRY_TS_HASH_CHAIN
    )
    for name in (ENTRY_MANIFEST, ENTRY_ASIC_MANIFEST):
        if name in entries and not entries[name]:
            raise AsicManifestNotFound(f"{name} is empty")

    attachments = sorted(
        (int(found.group(1)), name)
        for name in entries
        if (found := _ATTACHMENT.fullmatch(name))
    )
    return ASiCContainer(
        message=message,
        signature=signature,
        sig_hash_chain_result=sig_result,
        sig_hash_chain=sig_chain,
        ts_hash_chain_result=ts_result,
        ts_hash_chain=ts_chain,
        timestamp=timestamp,
        attachments={name: entries[name] for _, name in attachments},
        manifest=entries.get(ENTRY_MANIFEST),
        asic_manifest=entries.get(ENTRY_ASIC_MANIFEST),
    )


def _read_entries(data: bytes, max_bytes: int) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise AsicMimeTypeNotFound(f"not a ZIP container: {exc}") from exc

    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(infos) > MAX_ENTRIES:
            raise AsicError(f"container has {len(infos)} entries, over {MAX_ENTRIES}")
        if sum(info.file_size for info in infos) > max_bytes:
            raise AsicError(f"container unpacks to more than {max_bytes} bytes")
        entries: dict[str, bytes] = {}
        for info in infos:
            wanted = info.filename in _KNOWN or _ATTACHMENT.fullmatch(info.filename)
            if not wanted:
                continue  # other entries are ignored, as in the reference
            if info.filename in entries:
                # Two copies: what is verified and what a reader sees may differ.
                raise AsicError(f"entry {info.filename!r} appears more than once")
            try:
                entries[info.filename] = archive.read(info)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                raise AsicError(
                    f"entry {info.filename!r} is unreadable: {exc}"
                ) from exc
    return entries


_KNOWN = {
    ENTRY_MIMETYPE,
    ENTRY_MESSAGE,
    ENTRY_SIGNATURE,
    ENTRY_SIG_HASH_CHAIN_RESULT,
    ENTRY_SIG_HASH_CHAIN,
    ENTRY_TS_HASH_CHAIN_RESULT,
    ENTRY_TS_HASH_CHAIN,
    ENTRY_MANIFEST,
    ENTRY_ASIC_MANIFEST,
    ENTRY_TIMESTAMP,
}


def _chain_pair(
    entries: dict[str, bytes], result_name: str, chain_name: str
) -> tuple[bytes | None, bytes | None]:
    result = entries.get(result_name) or None
    chain = entries.get(chain_name) or None
    if chain is not None and result is None:
        raise AsicHashChainResultNotFound(f"{chain_name} without {result_name}")
    if result is not None and chain is None:
        raise AsicHashChainNotFound(f"{result_name} without {chain_name}")
    return result, chain


def _has_signature_timestamp(signature: bytes) -> bool:
    try:
        root = parse_xml(signature)
    except ClientRequestError as exc:
        raise MalformedSignature(f"signatures.xml is not XML: {exc}") from exc
    tags = (f"{{{XADES_NS}}}SignatureTimeStamp", f"{{{XADES_NS}}}EncapsulatedTimeStamp")
    for element in root.iter(*tags):
        if isinstance(element, etree._Element):
            return True
    return False
