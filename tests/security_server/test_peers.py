"""The consumer's reading of a provider's answer (transport.md §10)."""

from __future__ import annotations

import pytest

from protocol.errors import HttpError, ServiceFailed
from security_server.faults import fault_code
from security_server.peers import decode_reply, split_address

CLIENT_PROXY = "Server.ClientProxy"


@pytest.mark.parametrize(
    ("status", "content_type", "payload", "code"),
    [
        (
            200,
            "application/json",
            b"{}",
            "Server.ClientProxy.ServiceFailed.InvalidContentType",
        ),
        (
            200,
            "multipart/mixed; boundary=xtopabc",
            b"--xtopabc\r\ncontent-type: text/plain\r\n\r\nx",
            "Server.ClientProxy.ServiceFailed.MimeParsingFailed",
        ),
        (404, "text/html", b"nope", "Server.ClientProxy.HttpError"),
    ],
    ids=["json", "broken-multipart", "http-404"],
)
def test_a_malformed_answer_is_the_provider_sides_failure(
    status: int, content_type: str, payload: bytes, code: str
) -> None:
    with pytest.raises((ServiceFailed, HttpError)) as caught:
        decode_reply(status, content_type, payload)
    assert fault_code(caught.value, CLIENT_PROXY) == code


def test_a_whole_text_xml_answer_is_a_fault() -> None:
    fault = b"<Envelope/>"
    assert decode_reply(200, "text/xml; charset=UTF-8", fault).fault == fault


@pytest.mark.parametrize(
    ("address", "expected"),
    [("ss.example", ("ss.example", None)), ("127.0.0.1:5501", ("127.0.0.1", 5501))],
)
def test_split_address(address: str, expected: tuple[str, int | None]) -> None:
    assert split_address(address) == expected
