"""The hardened parser: refuses DTDs before reading them, accepts plain documents."""

from __future__ import annotations

import time

import pytest

from protocol.errors import InvalidXml
from protocol.xml import MAX_DEPTH, parse_xml

ACCEPTED = {
    "plain": b"<a>x</a>",
    "declaration-and-bom": b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?><a/>',
    "utf-16": '<?xml version="1.0" encoding="UTF-16"?><a>\u00e9</a>'.encode("utf-16"),
    "latin-1": b'<?xml version="1.0" encoding="ISO-8859-1"?><a>\xe9</a>',
    "comment-and-pi-first": b"<!-- c --><?pi x?><a/>",
}

REFUSED = {
    "endless-parameter-entity": (
        b'<!DOCTYPE a [<!ENTITY % z SYSTEM "file:///dev/zero"> %z;]><a/>'
    ),
    "local-file-entity": (
        b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
    ),
    "external-subset": b'<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>',
    "entity-bomb": (
        b'<!DOCTYPE a [<!ENTITY b "bbbbbbbbbb"><!ENTITY c "&b;&b;&b;&b;&b;">]>'
        b"<a>&c;&c;&c;</a>"
    ),
    "not-xml": b"hello",
    "two-roots": b"<a/><b/>",
    "undeclared-entity": b"<a>&nope;</a>",
    "too-deep": b"<a>" * (MAX_DEPTH + 1) + b"</a>" * (MAX_DEPTH + 1),
    "empty": b"",
}


@pytest.mark.parametrize("data", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_plain_documents_parse(data: bytes) -> None:
    assert parse_xml(data).tag == "a"


@pytest.mark.parametrize("data", REFUSED.values(), ids=REFUSED.keys())
def test_hostile_documents_are_refused_quickly_without_reading_files(
    data: bytes,
) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidXml) as caught:
        parse_xml(data)
    assert time.monotonic() - started < 1
    assert "root:" not in caught.value.message  # nothing of /etc/passwd leaks
