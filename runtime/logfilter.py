"""Whole log lines, filtered by stream, text and time: what `terrarium logs`
prints with --stream, --grep or --until, and what the dashboard's log
download sends.

Runtime.log_output(timestamps=True) gives (stream, bytes) pieces: blocks of
one stream's lines, each line starting with its record's time (30 bytes and
a space), a long line in several pieces (the relay cuts at 16 KiB) of which
only the first carries the time.  Lines joins each stream's pieces into
whole lines, holding at most MAX_LINE bytes of one (a longer line is given
in parts, each with the time of its start), so memory stays bounded
whatever the container wrote; filtered() keeps the lines wanted.

The search is a case-insensitive substring, as the dashboard's logs page
searches: no pattern language to learn or to get wrong on a pasted line.
"""
from __future__ import annotations

from .errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator

    Line = tuple[bytes, str, bytes]         # (time, stream, content)

STAMP = 30                  # "2026-11-30T20:00:00.123456789Z"
MAX_LINE = 1 << 20          # bytes of one line held before it is given in parts
STREAMS = ("stdout", "stderr")
MAX_GREP = 1000             # characters of a search


def stamp_of(line: bytes) -> bytes:
    """The record time at the start of a line rendered with timestamps, else b""."""
    if len(line) > STAMP and line[STAMP] == 32 and line[STAMP - 1] == 90 and line[4] == 45 and line[10] == 84:
        return line[:STAMP]                                 # " ", "Z", "-", "T"
    return b""


class Lines:
    """feed(stream, piece) -> [(time, stream, content)] of the lines it completes;
    rest() -> the lines still open (the log ended inside them)."""

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._held = {s: b"" for s in STREAMS}
        self._time = {s: b"" for s in STREAMS}

    def feed(self, stream: str, data: bytes) -> list[Line]:
        held = self._held.get(stream, b"")
        if held:
            data = held + data
        parts = data.split(b"\n")
        rest = parts.pop()
        if len(rest) > self.max_line:
            parts.append(rest)
            rest = b""
        self._held[stream] = rest
        return [self._line(stream, p) for p in parts]

    def rest(self) -> list[Line]:
        out = [self._line(s, held) for s, held in self._held.items() if held]
        self._held = {s: b"" for s in STREAMS}
        return out

    def _line(self, stream: str, line: bytes) -> Line:
        stamp = stamp_of(line)
        if stamp:
            self._time[stream] = stamp
            return stamp, stream, line[STAMP + 1:]
        return self._time.get(stream, b""), stream, line     # the part after a cut


def check_stream(value: str | None) -> tuple[str, ...]:
    """--stream: "stdout", "stderr", or None/"" for both."""
    if value in (None, "", "all", "both"):
        return STREAMS
    if value not in STREAMS:
        raise InvalidArgument(f"invalid stream {ascii(value)[:40]}: use stdout or stderr")
    return (value,)


def check_grep(text: str | None) -> str | None:
    if text is None or text == "":
        return None
    if len(text) > MAX_GREP or "\0" in text:
        raise InvalidArgument(f"invalid search: at most {MAX_GREP} characters, no NUL")
    return text


def matcher(text: str | None) -> Callable[[bytes], bool] | None:
    """content bytes -> whether it contains text, ignoring case (None: everything)."""
    if text is None:
        return None
    if text.isascii():
        needle = text.lower().encode()
        return lambda content: needle in content.lower()
    needle_s = text.lower()
    return lambda content: needle_s in content.decode("utf-8", "replace").lower()


def filtered(pieces: Iterable[tuple[str, bytes]], *, streams: Iterable[str] = STREAMS, grep: str | None = None,
             until: bytes | None = None) -> Iterator[Line]:
    """The (time, stream, content) of the whole lines of pieces (log_output with
    timestamps) that are of streams, contain grep and are stamped before until
    (the first line at or after it ends the walk: a log is in time order)."""
    lines, match = Lines(), matcher(grep)
    wanted = set(streams)

    def kept(batch: list[Line]) -> Generator[Line, None, bool]:
        for line in batch:
            if until and line[0] >= until:
                return False
            if match is None or match(line[2]):
                yield line
        return True

    for stream, data in pieces:
        if stream not in wanted:
            continue
        batch = lines.feed(stream, data)
        ok = yield from kept(batch)
        if ok is False:
            return
    yield from kept(lines.rest())


def render(line: Line, timestamps: bool) -> bytes:
    """A line as `terrarium logs` prints it (with -t, its time first)."""
    time, _, content = line
    if timestamps and time:
        return time + b" " + content + b"\n"
    return content + b"\n"
