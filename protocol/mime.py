"""Core: MIME content types and byte-exact multipart framing (RFC 2045, RFC 2046).

Used for SOAP with attachments (soap-message.md §8) and for the messages
between security servers (transport.md §6). Part bodies are never decoded:
what is hashed and signed is the exact byte range between the delimiters.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InternalError, InvalidContentType, MimeParsingFailed

CRLF = b"\r\n"
_TOKEN_SEPARATORS = set('()<>@,;:\\"/[]?= \t')
_BLANKS = " \t\r\n"


# -- Content-Type ------------------------------------------------------------


def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into its lower-case type and its parameters.

    Any whitespace (tabs included) around tokens is tolerated, parameter
    values may be quoted, and parameter names are folded to lower case.

    :raises InvalidContentType: the value is absent or has no ``type/subtype``.
    """
    if value is None or not value.strip(_BLANKS):
        raise InvalidContentType("Content-Type is missing")

    pieces = _split_params(value)
    mime_type = pieces[0].strip(_BLANKS).lower()
    # No separator check on the subtype: X-Road uses "signature/bdoc-1.0/ts".
    main, slash, sub = mime_type.partition("/")
    if not slash or not main or not sub or _has_separator(main) or " " in sub:
        raise InvalidContentType(f"malformed Content-Type {value!r}")

    params: dict[str, str] = {}
    for piece in pieces[1:]:
        if not piece.strip(_BLANKS):
            continue  # tolerate "text/xml;" and ";;"
        name, eq, raw = piece.partition("=")
        name = name.strip(_BLANKS).lower()
        if not eq or not name:
            raise InvalidContentType(f"malformed Content-Type parameter {piece!r}")
        params[name] = _unquote(raw.strip(_BLANKS))
    return mime_type, params


def _has_separator(text: str) -> bool:
    return any(ch in _TOKEN_SEPARATORS for ch in text)


def _split_params(value: str) -> list[str]:
    """Split at ``;`` outside quoted strings."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(ch)
    pieces.append("".join(current))
    return pieces


def _unquote(raw: str) -> str:
    if len(raw) < 2 or not (raw.startswith('"') and raw.endswith('"')):
        return raw
    out: list[str] = []
    escaped = False
    for ch in raw[1:-1]:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(ch)
    return "".join(out)


def content_type_param(value: str, name: str) -> str | None:
    """Return one parameter of a Content-Type value, or None."""
    return parse_content_type(value)[1].get(name.lower())


# -- parts -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MimePart:
    """One body part: its headers in wire order and its raw body bytes."""

    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def content_type(self) -> str | None:
        return self.header("Content-Type")

    @property
    def mime_type(self) -> str | None:
        """The lower-case ``type/subtype`` of the part, or None without a type."""
        value = self.content_type
        return None if value is None else parse_content_type(value)[0]

    def header(self, name: str) -> str | None:
        """The first header of that name, compared case-insensitively."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def extra_headers(self) -> tuple[tuple[str, str], ...]:
        """All headers except Content-Type."""
        return tuple((k, v) for k, v in self.headers if k.lower() != "content-type")


# -- parsing -----------------------------------------------------------------


def parse_multipart(
    data: bytes, boundary: str, *, lenient_end: bool = False
) -> list[MimePart]:
    """Split a multipart body into its parts, keeping every body byte-exact.

    A part body ends before the CRLF (or bare LF) that precedes the next
    delimiter line. The preamble and the epilogue are ignored.

    :param lenient_end: accept a final delimiter line at the very end of the
        data as the close delimiter (some services omit the trailing ``--``).
    :raises MimeParsingFailed: no delimiter, no close delimiter, or a part
        whose header block cannot be read.
    """
    check_boundary(boundary)
    delimiter = b"--" + boundary.encode("ascii")

    position = _next_delimiter(data, delimiter, 0)
    if position is None:
        raise MimeParsingFailed(f"no delimiter for boundary {boundary!r} found")

    parts: list[MimePart] = []
    _, closed, start = position
    while not closed:
        found = _next_delimiter(data, delimiter, start)
        if found is None:
            raise MimeParsingFailed("multipart body ends without a close delimiter")
        line_start, closed, next_start = found
        parts.append(_parse_part(data[start : _body_end(data, start, line_start)]))
        start = next_start
        if lenient_end and not closed and next_start == len(data):
            break  # a last delimiter line with nothing after it
    if not parts:
        raise MimeParsingFailed("multipart body has no parts")
    return parts


def check_boundary(boundary: str) -> None:
    """Refuse a boundary RFC 2046 does not allow (1 to 70 printable characters)."""
    if not boundary or len(boundary) > 70 or boundary.endswith(" "):
        raise MimeParsingFailed(f"invalid multipart boundary {boundary!r}")
    if not boundary.isascii() or any(ch in "\r\n" for ch in boundary):
        raise MimeParsingFailed(f"invalid multipart boundary {boundary!r}")


def _next_delimiter(
    data: bytes, delimiter: bytes, start: int
) -> tuple[int, bool, int] | None:
    """Find the next delimiter line at or after ``start``.

    Returns (index of the ``--``, whether it closes, index after the line).
    A delimiter must start a line and be followed only by optional blanks
    and a line end (or ``--`` for the close delimiter).
    """
    index = data.find(delimiter, start)
    while index != -1:
        at_line_start = index == 0 or data[index - 1 : index] == b"\n"
        after = index + len(delimiter)
        if at_line_start:
            if data[after : after + 2] == b"--":
                return index, True, _line_end(data, after + 2)
            line_end = _padding_then_eol(data, after)
            if line_end is not None:
                return index, False, line_end
        index = data.find(delimiter, index + 1)
    return None


def _padding_then_eol(data: bytes, index: int) -> int | None:
    """Skip transport padding; return the index after the line end, if any."""
    while data[index : index + 1] in (b" ", b"\t"):
        index += 1
    if data[index : index + 2] == CRLF:
        return index + 2
    if data[index : index + 1] == b"\n":
        return index + 1
    if index == len(data):
        return index  # a delimiter at the very end of the data
    return None


def _line_end(data: bytes, index: int) -> int:
    newline = data.find(b"\n", index)
    return len(data) if newline == -1 else newline + 1


def _body_end(data: bytes, start: int, line_start: int) -> int:
    """The end of a part: before the CRLF or LF that precedes the delimiter."""
    if line_start <= start:
        return start  # the delimiter directly follows the previous one
    end = line_start - 1  # the LF
    if end > start and data[end - 1 : end] == b"\r":
        end -= 1
    return end


def _parse_part(raw: bytes) -> MimePart:
    if not raw:
        return MimePart((), b"")

    header_end, body_start = _find_blank_line(raw)
    if header_end is None:
        # The blank line may be the one that precedes the next delimiter:
        # a part made only of complete header lines has an empty body.
        if raw.endswith(b"\n"):
            return MimePart(_parse_headers(raw), b"")
        raise MimeParsingFailed("MIME part has no blank line after its headers")
    return MimePart(_parse_headers(raw[:header_end]), raw[body_start:])


def _find_blank_line(raw: bytes) -> tuple[int | None, int]:
    if raw.startswith(CRLF):
        return 0, 2
    if raw.startswith(b"\n"):
        return 0, 1
    index = raw.find(b"\n")
    while index != -1:
        following = raw[index + 1 : index + 3]
        if following == CRLF:
            return index + 1, index + 3
        if following[:1] == b"\n":
            return index + 1, index + 2
        index = raw.find(b"\n", index + 1)
    return None, 0


def _parse_headers(block: bytes) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    for line in block.replace(CRLF, b"\n").split(b"\n"):
        if not line:
            continue
        text = line.decode("utf-8", "surrogateescape")
        if text[0] in " \t":
            if not headers:
                raise MimeParsingFailed("MIME header block starts with a continuation")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {text.strip(_BLANKS)}")
            continue
        name, colon, value = text.partition(":")
        name = name.strip(_BLANKS)
        if not colon or not name or any(ch in " \t" for ch in name):
            raise MimeParsingFailed(f"malformed MIME header line {text!r}")
        headers.append((name, value.strip(_BLANKS)))
    return tuple(headers)


# -- building ----------------------------------------------------------------


def build_multipart(parts: list[MimePart], boundary: str) -> bytes:
    """Frame parts as transport.md §6 does: CRLF lines, ``Name: value`` headers.

    :raises InternalError: the boundary occurs inside a body, or a header
        would break the framing.
    """
    check_boundary(boundary)
    delimiter = b"--" + boundary.encode("ascii")

    chunks: list[bytes] = []
    for index, part in enumerate(parts):
        if delimiter in part.body:
            raise InternalError("multipart boundary occurs inside a part body")
        chunks.append((CRLF if index else b"") + delimiter + CRLF)
        chunks.append(_header_block(part.headers))
        chunks.append(part.body)
    chunks.append(CRLF + delimiter + b"--" + CRLF)
    return b"".join(chunks)


def _header_block(headers: tuple[tuple[str, str], ...]) -> bytes:
    lines: list[bytes] = []
    for name, value in headers:
        if any(ch in "\r\n:" for ch in name) or any(ch in "\r\n" for ch in value):
            raise InternalError(f"MIME header {name!r} cannot be framed")
        lines.append(f"{name}: {value}".encode("utf-8", "surrogateescape") + CRLF)
    return b"".join(lines) + CRLF
