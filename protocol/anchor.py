"""Core: configuration anchors (global-configuration.md §5).

An anchor names the download locations of one instance's configuration and
the certificates whose keys may sign it. It also appears, with the same
content, inside private parameters as a trusted federation anchor (§6).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from .digests import b64, unb64
from .errors import GlobalConfError, XRoadError
from .identifiers import XROAD_NS
from .xml import parse_xml

_PEM_MARK = b"-----BEGIN"


class MalformedAnchor(GlobalConfError):
    """The anchor is not well formed or lacks a required element."""

    code = "MalformedGlobalConf"


@dataclass(frozen=True, slots=True)
class AnchorSource:
    download_url: str
    verification_certs: tuple[x509.Certificate, ...]


@dataclass(frozen=True, slots=True)
class ConfigurationAnchor:
    instance: str
    generated_at: datetime | None
    sources: tuple[AnchorSource, ...]

    def verification_certs(self) -> list[x509.Certificate]:
        """All certificates of all sources, without duplicates, in order."""
        return _unique(c for s in self.sources for c in s.verification_certs)


# -- certificates and small XML helpers shared with globalconf.py ------------


def decode_cert(text: str | None, what: str = "certificate") -> x509.Certificate:
    """Read base64 of DER, or base64 of PEM text (§7, last note)."""
    if not text or not text.strip():
        raise GlobalConfError(f"{what} is empty")
    try:
        raw = unb64(text)
        if raw.lstrip().startswith(_PEM_MARK):
            return x509.load_pem_x509_certificate(raw.strip())
        return x509.load_der_x509_certificate(raw)
    except (XRoadError, ValueError) as exc:
        raise GlobalConfError(f"{what} is not a base64 X.509 certificate") from exc


def encode_cert(cert: x509.Certificate) -> str:
    """Base64 of the certificate's DER, without line breaks."""
    return b64(cert.public_bytes(serialization.Encoding.DER))


def child(parent: etree._Element, name: str) -> etree._Element | None:
    """The first unqualified child called ``name``, or None."""
    for element in parent:
        if element.tag == name:
            return element
    return None


def children(parent: etree._Element, name: str) -> list[etree._Element]:
    return [element for element in parent if element.tag == name]


def opt_text(parent: etree._Element, name: str) -> str | None:
    """Stripped text of the child ``name``, or None when absent or empty."""
    element = child(parent, name)
    if element is None or element.text is None or not element.text.strip():
        return None
    return element.text.strip()


def req_text(parent: etree._Element, name: str) -> str:
    """Stripped text of the child ``name``; absent or empty is an error."""
    value = opt_text(parent, name)
    if value is None:
        raise GlobalConfError(f"element {name!r} is missing or empty in {parent.tag!r}")
    return value


def sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, name)
    if text is not None:
        element.text = text
    return element


def check_root(root: etree._Element, localname: str) -> None:
    if etree.QName(root).text != f"{{{XROAD_NS}}}{localname}":
        raise GlobalConfError(
            f"expected root {localname!r} in {XROAD_NS!r}, got {root.tag!r}"
        )


def format_time(value: datetime) -> str:
    """xs:dateTime in UTC with milliseconds and a ``Z`` suffix."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 instant; a value without offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise GlobalConfError(f"invalid date-time {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _unique(certs: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    seen: list[x509.Certificate] = []
    for cert in certs:
        if cert not in seen:
            seen.append(cert)
    return seen


# -- anchor element ----------------------------------------------------------


def anchor_from_element(
    element: etree._Element, *, lenient: bool = False
) -> ConfigurationAnchor:
    """Read anchor content from ``element`` (a root anchor or a private-params entry).

    With ``lenient`` a verification cert that is not a certificate is skipped
    instead of refused; the reference test data carries such placeholders.
    """
    generated = opt_text(element, "generatedAt")
    instance = req_text(element, "instanceIdentifier")
    sources = []
    for source in children(element, "source"):
        url = req_text(source, "downloadURL")
        certs = []
        for cert_el in children(source, "verificationCert"):
            try:
                certs.append(decode_cert(cert_el.text, "verificationCert"))
            except GlobalConfError:
                if not lenient:
                    raise
        if not certs and not lenient:
            raise GlobalConfError(f"anchor source {url!r} has no verificationCert")
        sources.append(AnchorSource(url, tuple(certs)))
    if not sources:
        raise GlobalConfError(f"anchor for {instance!r} has no source")
    return ConfigurationAnchor(
        instance, parse_time(generated) if generated else None, tuple(sources)
    )


def anchor_to_element(anchor: ConfigurationAnchor, element: etree._Element) -> None:
    """Append the anchor's children to ``element`` in schema order."""
    if anchor.generated_at is not None:
        sub(element, "generatedAt", format_time(anchor.generated_at))
    sub(element, "instanceIdentifier", anchor.instance)
    for source in anchor.sources:
        source_el = sub(element, "source")
        sub(source_el, "downloadURL", source.download_url)
        for cert in source.verification_certs:
            sub(source_el, "verificationCert", encode_cert(cert))


# -- public API --------------------------------------------------------------


def build_anchor(anchor: ConfigurationAnchor) -> bytes:
    """Serialise an anchor as the standalone XML file of §5."""
    root = etree.Element(f"{{{XROAD_NS}}}configurationAnchor", nsmap={"tns": XROAD_NS})
    anchor_to_element(anchor, root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


def parse_anchor(data: bytes) -> ConfigurationAnchor:
    """Parse a standalone anchor file.

    :raises MalformedAnchor: not XML, wrong root, or a required element missing.
    """
    try:
        root = parse_xml(data)
        check_root(root, "configurationAnchor")
        return anchor_from_element(root)
    except XRoadError as exc:
        raise MalformedAnchor(f"invalid configuration anchor: {exc}") from exc


def anchor_fingerprint(data: bytes) -> str:
    """SHA-224 of the anchor file bytes as upper-case hex pairs joined by ``:``."""
    hexed = hashlib.sha224(data).hexdigest().upper()
    return ":".join(hexed[i : i + 2] for i in range(0, len(hexed), 2))
