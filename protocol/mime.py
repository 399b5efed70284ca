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


# -- incremental parsing -------------------------------------------------------
#
# How it works: a delimiter scanner cuts the input into the raw byte range of
# each part (the CRLF or bare LF before a delimiter belongs to the delimiter,
# as in parse_multipart), holding back only the bytes that could still turn out
# to be the start of a delimiter line. A header splitter on top of it collects
# the start of each part until the blank line and then passes body bytes on as
# they come. Any chunking of the same input gives the same parts.

MAX_PADDING = 1024  # transport padding after a delimiter (RFC 2046, 5.1.1)


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part begins; its headers in wire order."""

    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class PartData:
    """Some bytes of the current part body, in order."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part is complete."""


@dataclass(frozen=True, slots=True)
class MultipartDone:
    """The close delimiter was read; everything after it is ignored."""


MultipartEvent = PartStart | PartData | PartEnd | MultipartDone

_PREAMBLE, _PART, _DONE = range(3)


class MultipartParser:
    """Feed a multipart body in chunks of any size; get part events back.

    Holds at most about one chunk plus the delimiter length (and a header
    block up to ``max_header_bytes``), never a whole part body.

    :param lenient_end: as for :func:`parse_multipart`.
    :raises MimeParsingFailed: broken framing, a header block over
        ``max_header_bytes`` or more than ``max_parts`` parts.
    """

    def __init__(
        self,
        boundary: str,
        *,
        lenient_end: bool = False,
        max_header_bytes: int = 64 * 1024,
        max_parts: int = 1000,
    ) -> None:
        check_boundary(boundary)
        self._delimiter = b"--" + boundary.encode("ascii")
        self._lenient_end = lenient_end
        self._max_header_bytes = max_header_bytes
        self._max_parts = max_parts
        self._state = _PREAMBLE
        self._buf = bytearray()
        self._line_start = True  # the byte before _buf[0] ends a line
        self._parts = 0
        self._part_fed = 0  # input bytes that went into the current part
        self._head: bytearray | None = None  # header bytes until the blank line

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> list[MultipartEvent]:
        """Take the next bytes of the body; return the events they complete."""
        if self._state == _DONE or not data:
            return []
        self._buf += data
        if self._state == _PART:
            self._part_fed += len(data)
        return self._scan(final=False)

    def close(self) -> list[MultipartEvent]:
        """Signal the end of the input; return the last events.

        :raises MimeParsingFailed: the close delimiter never came.
        """
        if self._state == _DONE:
            return []
        events = self._scan(final=True)
        if self._state == _DONE:
            return events
        if self._state == _PREAMBLE:
            raise MimeParsingFailed("no multipart delimiter found")
        if self._lenient_end and self._part_fed == 0 and self._parts > 1:
            self._state = _DONE  # a last delimiter line with nothing after it
            return events + [MultipartDone()]
        raise MimeParsingFailed("multipart body ends without a close delimiter")

    def _scan(self, *, final: bool) -> list[MultipartEvent]:
        events: list[MultipartEvent] = []
        while self._state != _DONE:
            found = self._find_delimiter(final)
            if isinstance(found, int):  # no delimiter yet: pass on what is safe
                self._release(found, events)
                return events
            content_end, closed, next_start = found
            self._release(content_end, events)
            if self._state == _PART:
                self._end_part(events)
            del self._buf[: next_start - content_end]
            self._line_start = True
            if closed:
                if self._parts == 0:
                    raise MimeParsingFailed("multipart body has no parts")
                self._state = _DONE
                self._buf = bytearray()
                events.append(MultipartDone())
                return events
            self._start_part()
            if final and not self._buf and self._lenient_end:
                if self._parts == 1:
                    raise MimeParsingFailed("multipart body has no parts")
                self._state = _DONE
                self._parts -= 1
                events.append(MultipartDone())
        return events

    def _find_delimiter(self, final: bool) -> int | tuple[int, bool, int]:
        """Find the next delimiter line in the buffer.

        Returns (end of the part content, whether it closes, index after the
        line), or the number of leading bytes that no delimiter can touch.
        """
        buf, delimiter = self._buf, self._delimiter
        safe = len(buf) if final else max(0, len(buf) - len(delimiter) - 2)
        index = buf.find(delimiter)
        while index != -1:
            if (index == 0 and self._line_start) or buf[index - 1 : index] == b"\n":
                tail = _delimiter_tail(buf, index + len(delimiter), final)
                if tail is None:  # undecided until more data comes
                    return min(safe, max(0, index - 2))
                if tail is not False:
                    closed, next_start = tail
                    return _content_end(buf, index), closed, next_start
            index = buf.find(delimiter, index + 1)
        return safe

    def _release(self, count: int, events: list[MultipartEvent]) -> None:
        """Hand on the first ``count`` buffered bytes (dropped in the preamble)."""
        if count <= 0:
            return
        if self._state == _PART:
            self._part_data(bytes(self._buf[:count]), events)
        self._line_start = self._buf[count - 1 : count] == b"\n"
        del self._buf[:count]

    def _start_part(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise MimeParsingFailed(
                f"multipart body has more than {self._max_parts} parts"
            )
        self._state = _PART
        self._head = bytearray()
        self._part_fed = len(self._buf)

    def _part_data(self, data: bytes, events: list[MultipartEvent]) -> None:
        if self._head is None:
            events.append(PartData(data))
            return
        self._head += data
        blank = _blank_line_prefix(self._head)
        if blank is None:
            if len(self._head) > self._max_header_bytes:
                raise MimeParsingFailed(
                    f"MIME header block is over {self._max_header_bytes} bytes"
                )
            return
        header_end, body_start = blank
        events.append(PartStart(_parse_headers(bytes(self._head[:header_end]))))
        if body_start < len(self._head):
            events.append(PartData(bytes(self._head[body_start:])))
        self._head = None

    def _end_part(self, events: list[MultipartEvent]) -> None:
        if self._head is not None:
            part = _parse_part(bytes(self._head))
            events.append(PartStart(part.headers))
            if part.body:
                events.append(PartData(part.body))
            self._head = None
        events.append(PartEnd())


def _delimiter_tail(
    buf: bytearray, after: int, final: bool
) -> tuple[bool, int] | bool | None:
    """What follows ``--boundary``: (closes, next index), False if it is no
    delimiter line, None if more input is needed to tell."""
    if buf[after : after + 2] == b"--":
        return True, len(buf)
    if not final and buf[after:] in (b"", b"-"):
        return None
    index = after
    while buf[index : index + 1] in (b" ", b"\t"):
        index += 1
    if index - after > MAX_PADDING:
        raise MimeParsingFailed("transport padding after a delimiter is too long")
    if buf[index : index + 2] == CRLF:
        return False, index + 2
    if buf[index : index + 1] == b"\n":
        return False, index + 1
    if index == len(buf):
        return (False, index) if final else None
    if buf[index : index + 1] == b"\r" and index + 1 == len(buf) and not final:
        return None
    return False


def _content_end(buf: bytearray, index: int) -> int:
    """Where the part content ends before a delimiter line at ``index``."""
    if index == 0:
        return 0
    end = index - 1  # the LF
    if end > 0 and buf[end - 1 : end] == b"\r":
        end -= 1
    return end


def _blank_line_prefix(head: bytearray) -> tuple[int, int] | None:
    """The blank line after the headers, if the bytes so far decide it."""
    if head.startswith(CRLF):
        return 0, 2
    if head.startswith(b"\n"):
        return 0, 1
    index = head.find(b"\n")
    while index != -1:
        following = head[index + 1 : index + 3]
        if following == CRLF:
            return index + 1, index + 3
        if following[:1] == b"\n":
            return index + 1, index + 2
        index = head.find(b"\n", index + 1)
    return None


def parse_multipart_incremental(
    chunks: list[bytes], boundary: str, *, lenient_end: bool = False
) -> list[MimePart]:
    """Parse chunked input into whole parts (for tests and small messages)."""
    parser = MultipartParser(boundary, lenient_end=lenient_end)
    events: list[MultipartEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.close()
    return collect_parts(events)


def collect_parts(events: list[MultipartEvent]) -> list[MimePart]:
    """Assemble events into whole parts."""
    parts: list[MimePart] = []
    headers: tuple[tuple[str, str], ...] = ()
    body: list[bytes] = []
    for event in events:
        if isinstance(event, PartStart):
            headers, body = event.headers, []
        elif isinstance(event, PartData):
            body.append(event.data)
        elif isinstance(event, PartEnd):
            parts.append(MimePart(headers, b"".join(body)))
    return parts


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
