"""Core: the one hardened XML parser every role uses.

No DTDs, no entity expansion, no network access, bounded depth. A document
that declares a DOCTYPE is refused outright (soap-message.md §7).
"""

from __future__ import annotations

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


def _depth_exceeds(root: etree._Element, limit: int) -> bool:
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in element)
    return False
