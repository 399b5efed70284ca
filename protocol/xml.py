"""Core: the one hardened XML parser every role uses.

No DTDs, no entity expansion, no network access, bounded depth. A document
that declares a DOCTYPE is refused outright (soap-message.md §7), and it is
refused before libxml2 reads any of it: libxml2 processes parameter entities
of an internal DTD subset even with DTD loading off, so a declaration such as
``<!ENTITY % z SYSTEM "file:///dev/zero"> %z;`` would read local files, or
read forever.
"""

from __future__ import annotations

from xml.parsers import expat

from lxml import etree

from .errors import InvalidXml

MAX_DEPTH = 100

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=False,
    remove_comments=False,
    collect_ids=False,
)


def parse_xml(data: bytes, *, max_depth: int = MAX_DEPTH) -> etree._Element:
    """Parse bytes into an element tree, refusing DTDs, entities and deep nesting.

    :raises InvalidXml: the bytes are not a well-formed, acceptable document.
    """
    if not data or not data.strip():
        raise InvalidXml("empty XML document")
    check_prolog(data)
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise InvalidXml(f"malformed XML: {exc}") from exc
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise InvalidXml("DOCTYPE declarations are not allowed")
    if _depth_exceeds(root, max_depth):
        raise InvalidXml(f"XML nesting deeper than {max_depth} levels")
    return root


class _RootReached(Exception):
    """The prolog ended without a DOCTYPE; stop reading."""


def check_prolog(data: bytes) -> None:
    """Refuse a document whose prolog declares a DOCTYPE, reading only the prolog.

    expat stops at the start of the DOCTYPE declaration, before its internal
    subset or any entity is looked at, and at the root element otherwise.

    :raises InvalidXml: a DOCTYPE, or a prolog that is not well-formed.
    """
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse_doctype(*_: object) -> None:
        raise InvalidXml("DOCTYPE declarations are not allowed")

    def stop_at_root(*_: object) -> None:
        raise _RootReached

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.StartElementHandler = stop_at_root
    try:
        parser.Parse(data, True)
    except _RootReached:
        return
    except expat.ExpatError as exc:
        raise InvalidXml(f"malformed XML: {expat.ErrorString(exc.code)}") from None
    raise InvalidXml("XML document has no root element")


def _depth_exceeds(root: etree._Element, limit: int) -> bool:
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in element)
    return False
