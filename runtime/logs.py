"""Container logs: the shim's writer, the record format, and bounded readers.

Format: CRI's (the kubelet's container log format), one record per line:

    2026-11-30T20:00:00.123456789Z stdout F hello
    2026-11-30T20:00:00.123460000Z stderr P a piece of a long line,
    2026-11-30T20:00:00.123470000Z stderr F  and its end

a timestamp (RFC 3339, UTC, always nine fraction digits), the stream, F for
a full line or P for a piece of one (the rest follows in later records of
the same stream), then the bytes as the container wrote them, without the
newline.  Chosen over Docker's json-file because:

- writing it costs a prefix per line: one bytes.replace per pipe read turns
  a chunk into records (C code, no Python per line), where json-file must
  escape every line;
- the content is the container's bytes, untouched (json-file turns invalid
  UTF-8 into U+FFFD);
- it can be read from the end: a record is whatever lies between two
  newlines, and its stream and tag are at fixed places;
- fixed-width UTC timestamps compare as bytes, so --since is a byte compare.

`terrarium logs` prints the content as `docker logs` does (stdout records to
stdout, stderr records to stderr; -t adds the timestamp), so its users do
not see the format unless they read the file.

Files: NAME is the live file; when a write would take it past max_size it is
rotated: NAME.1 is the newest old file, NAME.<max_file - 1> the oldest, and
the oldest is dropped.  A pipe read takes at most READ_SIZE bytes (longer
lines become P records), so a record is at most RECORD_MAX bytes, and the
smallest max_size allowed (runtime.spec.MIN_LOG_SIZE) has room for one: no
file exceeds max_size, and the log on disk never exceeds max_size * max_file.

Readers never hold more than a block (BLOCK) and one record in memory,
whatever the size of the files: --tail walks records backwards from the end
of the newest file; -f follows by inode across rotations, finishing the
file it is in before it moves on to the one that replaced it.
"""
from __future__ import annotations

import fcntl
import os
import select
import time

from .errors import InvalidArgument
from .model import LogConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import IO, NamedTuple as TypedRecord, TypeVar

    _T = TypeVar("_T")
    Position = tuple[int, int]          # (index in the files opened, offset)
    # keep(k, offset, record): whether a record is wanted (see _walk)
    Keep = Callable[[int | None, int, "Record"], bool]
    # follow(timeout) -> True once the writer is gone (see read)
    Follow = Callable[[float], bool]
else:
    from .model import TypedRecord

DEFAULT_MAX_SIZE, DEFAULT_MAX_FILE = LogConfig()      # 10m x 3, Docker's `local` convention
READ_SIZE = 16384                     # one pipe read; containerd caps a CRI line at 16 KiB too
RECORD_MAX = 30 + 8 + 2 + READ_SIZE + 1   # timestamp, " stdout ", "F ", content, newline
DRAIN_MS = 1000                       # after init's exit, stop when the pipes are quiet this long
TRIM_AFTER = 256 << 10                # relay's heap is given back after this much output...
QUIET_MS = 1000                       # ...and this long without any
BLOCK = 65536                         # readers' unit of I/O and of memory


# ------------------------------------------------------------------- writer
#
# Runs in the shim, forked from the fork server: every object it touches is a
# page the shim copies (bench/README.md, memory per container), so it is one
# loop over locals with no per-record Python.

_NL = b"\n"


def open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)


def relay(out_r: int, err_r: int, pidfd: int, path: str, max_size: int, max_file: int,
          trim: Callable[[], object] | None = None) -> None:
    """Copy the container's stdout and stderr pipes into the log at path as
    records until both reach EOF, or, once pidfd (init) is readable, until
    they have been quiet for DRAIN_MS (a process outside the container may
    hold a write end).  Nothing runs while the container is silent, but
    trim() once it has gone quiet for QUIET_MS after more than TRIM_AFTER
    bytes (a burst leaves freed buffers all over the heap).

    A read that filled its buffer and ends inside a line keeps that line's
    start for the next read (with which it still fits one record), so a
    stream of lines does not become a P record per read; what is held is
    written as a piece as soon as the pipes are empty."""
    poller = select.poll()
    poller.register(out_r, select.POLLIN)       # first: of two chunks ready at once, stdout's
    poller.register(err_r, select.POLLIN)       # is written first
    poller.register(pidfd, select.POLLIN)
    try:
        fd = open_log(path)
    except OSError:             # the container's directory is gone: keep the pipes flowing
        fd, max_size = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC), 1 << 62
    size = os.lseek(fd, 0, os.SEEK_END)
    timeout = None              # wait for ever
    second, stamp = -1, b""
    pipes, exited, relayed = 2, False, 0
    held = {out_r: b"", err_r: b""}
    holding = False
    while pipes:
        ready = poller.poll(0 if holding else timeout)
        if not ready:
            if holding:
                fd, size = _release(held, fd, size, out_r, path, max_size, max_file)
                holding = False
                continue
            if exited:
                break
            if trim is not None:
                trim()
            timeout, relayed = None, 0
            continue
        for r, _ in ready:
            if r == pidfd:
                poller.unregister(pidfd)
                timeout, exited = DRAIN_MS, True
                continue
            want = READ_SIZE - len(held[r])
            data = os.read(r, want)
            if not data:
                poller.unregister(r)
                pipes -= 1
                continue
            if held[r]:
                data = held[r] + data
                held[r] = b""
            if len(data) == READ_SIZE and data[-1] != 10:
                cut = data.rfind(_NL) + 1
                if cut:
                    held[r] = data[cut:]
                    data = data[:cut]
                    holding = True
            ns = time.time_ns()
            if ns // 1000000000 != second:
                second = ns // 1000000000
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
            prefix = b"%s.%09dZ%s" % (stamp, ns % 1000000000, b" stdout " if r == out_r else b" stderr ")
            fd, size = _append(fd, size, prefix, data, path, max_size, max_file)
            relayed += len(data)
            if relayed > TRIM_AFTER and not exited:
                timeout = QUIET_MS
    fd, size = _release(held, fd, size, out_r, path, max_size, max_file)
    os.close(fd)


def _release(held: dict[int, bytes], fd: int, size: int, out_r: int, path: str, max_size: int,
             max_file: int) -> tuple[int, int]:
    """Write the pieces relay() held back, as P records."""
    for r, data in held.items():
        if data:
            held[r] = b""
            prefix = format_time(time.time_ns()) + (b" stdout " if r == out_r else b" stderr ")
            fd, size = _append(fd, size, prefix, data, path, max_size, max_file)
    return fd, size


def _append(fd: int, size: int, prefix: bytes, data: bytes, path: str, max_size: int,
            max_file: int) -> tuple[int, int]:
    """Write data as records; rotate first when they would not fit.  Returns (fd, size)."""
    head, nl, last = data.rpartition(_NL)
    full = prefix + b"F "
    if nl:     # every line but a piece after the last newline is a full record
        pieces = [full, head.replace(_NL, _NL + full), _NL + prefix + b"P " + last + _NL if last else _NL]
    else:
        pieces = [prefix, b"P ", last, _NL]
    n = sum(map(len, pieces))
    try:
        if size + n <= max_size:
            return fd, size + os.writev(fd, pieces)
        buf = b"".join(pieces)
        start = 0
        while True:
            if n - start <= max_size - size:
                return fd, size + os.write(fd, buf[start:] if start else buf)
            cut = buf.rfind(_NL, start, start + max_size - size) + 1
            if cut > start:
                os.write(fd, buf[start:cut])
                start = cut
            fd, size = rotate(fd, path, max_file), 0
    except OSError:
        return fd, size     # disk full: the record is lost, the container must not block


def rotate(fd: int, path: str, max_file: int) -> int:
    """Shift NAME.i to NAME.i+1 (dropping the oldest), make the live file NAME.1
    and a new empty file NAME, and return its descriptor.

    NAME never goes missing: the old file gets its new name by a hard link
    and the new one replaces it by rename, so a reader (follow) always finds
    a file there, and an inode it holds only ever moves to an older name."""
    new = path + ".new"
    nfd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o640)
    oldest = -1
    try:
        if max_file > 1:        # (with one file, the one dropped is the one an attached reader waits at)
            try:
                oldest = os.open(f"{path}.{max_file - 1}", os.O_RDONLY | os.O_CLOEXEC)
                fcntl.flock(oldest, fcntl.LOCK_EX)    # an attached reader is still in it: wait
            except FileNotFoundError:
                pass
        for i in range(max_file - 1, 1, -1):
            try:
                os.rename(f"{path}.{i - 1}", f"{path}.{i}")
            except FileNotFoundError:
                pass
        if max_file > 1:
            os.link(path, new + "1")
            os.rename(new + "1", path + ".1")
        os.rename(new, path)
    except OSError:
        os.close(nfd)
        os.ftruncate(fd, 0)     # the cap holds even when the names cannot move
        return fd
    finally:
        if oldest >= 0:
            os.close(oldest)
    os.close(fd)
    return nfd


def write_message(path: str, text: str, stream: str = "stderr") -> None:
    """Append text as full records (the shim's "terrarium: ..." on a failed start)."""
    prefix = format_time(time.time_ns()) + f" {stream} F ".encode()
    data = text.encode(errors="replace").rstrip(_NL)
    fd = open_log(path)
    try:
        os.write(fd, prefix + data.replace(_NL, _NL + prefix) + _NL)
    finally:
        os.close(fd)


# ------------------------------------------------------------------- format

class Record(TypedRecord):
    """One record: time (the RFC 3339 bytes as written, b"" if none), stream
    ("stdout" or "stderr"), partial (a P record: the line goes on in the next
    one), content (bytes, without the newline)."""
    time: bytes
    stream: str
    partial: bool
    content: bytes


_STREAMS = {b"stdout": "stdout", b"stderr": "stderr"}


def parse(line: bytes) -> Record:
    """One line of a log file (without its newline) as a Record.  A line that
    is not a record (a log written before this format) is stdout content."""
    parts = line.split(b" ", 3)
    if len(parts) >= 3 and parts[1] in _STREAMS and parts[2] in (b"F", b"P") \
            and len(parts[0]) > 20 and parts[0][4:5] == b"-" and parts[0][-1:] == b"Z":
        return Record(parts[0], _STREAMS[parts[1]], parts[2] == b"P", parts[3] if len(parts) == 4 else b"")
    return Record(b"", "stdout", False, line)


def format_time(ns: int) -> bytes:
    """Unix nanoseconds as a record's timestamp."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1000000000))
    return b"%s.%09dZ" % (stamp.encode(), ns % 1000000000)


def parse_since(text: str | float, now_ns: int | None = None) -> bytes:
    """`--since` as docker takes it: RFC 3339 (2026-11-30T20:00:00Z, a date,
    a time without zone is local), a unix time (1764532800.5) or a duration
    back from now (10m, 1h30m, 45s) -> a record timestamp to compare with."""
    text = str(text).strip()
    try:
        return _since(text, time.time_ns() if now_ns is None else now_ns)
    except (ValueError, OverflowError, OSError):
        shown = ascii(text) if len(text) <= 60 else ascii(text[:60]) + "..."
        raise InvalidArgument(f"invalid --since {shown}: use a time such as 2026-11-30T20:00:00Z, "
                              "a unix time, or a duration such as 10m") from None


_UNITS_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def _since(text: str, now_ns: int) -> bytes:
    import re
    from datetime import datetime, timezone
    if len(text) > 64:
        raise ValueError(text)
    if text and re.fullmatch(r"([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+", text):
        parts = re.findall(r"([0-9]+(\.[0-9]+)?)(ns|us|µs|ms|s|m|h)", text)
        return format_time(now_ns - sum(int(float(n) * _UNITS_NS[u]) for n, _, u in parts))
    if re.fullmatch(r"[0-9]+(\.[0-9]{1,9})?", text):
        whole, _, frac = text.partition(".")
        return format_time(int(whole) * 10**9 + int(frac.ljust(9, "0") or 0))
    if not re.fullmatch(r"[0-9T:.+ Zz-]+", text):
        raise ValueError(text)          # fromisoformat lets odd bytes through (a NUL before the Z)
    when = datetime.fromisoformat(text.replace("z", "Z"))
    if when.tzinfo is None:
        when = when.astimezone()            # docker: no zone means the local time
    when = when.astimezone(timezone.utc)
    m = re.search(r"\.([0-9]+)", text.split("T")[-1].split(" ")[-1])
    ns = m.group(1)[:9].ljust(9, "0") if m else "000000000"
    return when.strftime("%Y-%m-%dT%H:%M:%S").encode() + b"." + ns.encode() + b"Z"


# ------------------------------------------------------------------ readers

def log_files(path: str) -> list[str]:
    """The log's files that exist, oldest first: NAME.<n>, ..., NAME.1, NAME."""
    d, base = os.path.split(path)
    try:
        names = os.listdir(d or ".")
    except FileNotFoundError:
        return []
    rotated = sorted((int(n[len(base) + 1:]), n) for n in names
                     if n.startswith(base + ".") and n[len(base) + 1:].isdigit())
    out = [os.path.join(d, n) for _, n in reversed(rotated)]
    if base in names:
        out.append(path)
    return out


def _open_all(path: str) -> list[IO[bytes]]:
    """Open the log's files oldest first (each inode once: during a rotation a
    file can briefly have two names)."""
    files: list[IO[bytes]] = []
    seen: set[int] = set()
    for name in log_files(path):
        try:
            f = open(name, "rb")
        except FileNotFoundError:
            continue                        # rotated away meanwhile
        ino = os.fstat(f.fileno()).st_ino
        if ino in seen:
            f.close()
            continue
        seen.add(ino)
        files.append(f)
    return files


def _backwards(files: list[IO[bytes]]) -> Iterator[tuple[Position, bytes]]:
    """((index in files, offset), first bytes) of each record, newest first,
    reading a BLOCK at a time from the end."""
    for i in range(len(files) - 1, -1, -1):
        fd = files[i].fileno()
        size = pos = os.fstat(fd).st_size
        carry = b""             # the first bytes of the block read before (later in the file)
        while pos > 0:
            start = max(0, pos - BLOCK)
            block = os.pread(fd, pos - start, start)
            if not block:
                break           # truncated meanwhile
            data = block + carry
            end = len(block)
            while end >= 0:
                j = data.rfind(_NL, 0, end)
                if j < 0 and start > 0:
                    break       # this record starts in an earlier block
                if start + j + 1 < size:        # a record starts after each newline, and at 0
                    yield (i, start + j + 1), data[j + 1:j + 49]
                end = j
            carry = block[:64]
            pos = start


def _tail_starts(files: list[IO[bytes]], n: int) -> tuple[dict[str, Position], Position]:
    """Where the last n lines begin: ({stream: (index in files, offset) of its
    first record to show}, the position from which every stream's records
    are shown).  A line is the P records of one stream up to its F record (or
    a run still open at the end); lines are counted by where they end, and
    the streams' lines interleave, so each stream has its own start."""
    found = 0
    starts: dict[str, Position] = {}
    inside: set[str] = set()
    done: set[str] = set()
    complete = False            # the n lines were found before the log's start
    for pos, header in _backwards(files):
        rec = parse(header)
        stream = rec.stream
        if stream in done:
            continue
        if stream not in inside or not rec.partial:     # the last record of a line
            if stream in inside:
                inside.discard(stream)                  # ...and the line after it began after it
            if found == n:
                done.add(stream)
                if not inside:
                    complete = True
                    break
                continue
            found += 1
            inside.add(stream)
        starts[stream] = pos
    last = len(files) - 1
    end = (last, os.fstat(files[last].fileno()).st_size) if files else (0, 0)
    for stream in done:
        starts.setdefault(stream, end)                  # none of its lines is among the n
    return starts, end if complete else (0, 0)          # (0, 0): fewer lines than n, all of them


def _since_start(files: list[IO[bytes]], since: bytes) -> int:
    """The index of the newest file that begins before since: older ones hold
    only older records (the writer stamps records in order)."""
    for i in range(len(files) - 1, -1, -1):
        first = os.pread(files[i].fileno(), 64, 0)
        if parse(first.split(_NL, 1)[0]).time < since:
            return i
    return 0


def _records(f: IO[bytes], hold_torn: bool) -> Iterator[tuple[int, Record]]:
    """(offset, record) from f's position to its end.  A last line without its
    newline is still being written: with hold_torn it is left for the next
    call (the file position stays before it)."""
    cont = None                 # the record an over-long line (not ours) continues
    offset = f.tell()
    while True:
        line = f.readline(BLOCK)
        if not line:
            return
        whole = line[-1:] == _NL
        if not whole and len(line) < BLOCK and hold_torn:
            f.seek(-len(line), os.SEEK_CUR)
            return
        body = line[:-1] if whole else line
        if cont is None:
            rec = parse(body)
        else:
            rec = Record(cont.time, cont.stream, cont.partial, body)
        cont = None if whole or len(line) < BLOCK else rec
        yield offset, rec._replace(partial=True) if cont is not None else rec
        offset += len(line)


def _successor(path: str, f: IO[bytes]) -> IO[bytes] | None:
    """The file that replaced f as the live one, opened, or None if f is still
    live.  Rotation only moves an inode to an older name, so it is the name
    just newer than where f is now (the oldest name if f was dropped)."""
    ino = os.fstat(f.fileno()).st_ino
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if st.st_ino == ino:
        if st.st_size < f.tell():
            f.seek(0)           # truncated in place (a rotation that could not rename)
        return None
    while True:
        names = log_files(path)
        inos: list[int | None] = []
        for name in names:
            try:
                inos.append(os.stat(name).st_ino)
            except FileNotFoundError:
                inos.append(None)
        k = max((i for i, x in enumerate(inos) if x == ino), default=-1) + 1
        if k >= len(names) or inos[k] is None:
            if not os.path.exists(path):
                return None     # the container was removed
            continue            # mid-rotation: look again
        try:
            nxt = open(names[k], "rb")
        except FileNotFoundError:
            continue
        if os.fstat(nxt.fileno()).st_ino == inos[k]:
            return nxt
        nxt.close()             # renamed between the stat and the open


def read(path: str, *, tail: int | None = None, since: bytes | None = None, follow: Follow | None = None,
         poll: float = 0.1, attach: bool | IO[bytes] = False) -> Iterator[Record]:
    """The records of the log at path, oldest first, in bounded memory.

    tail: only the last N lines.  since: only records stamped at or after it
    (parse_since).  follow: a function(timeout) -> True once the writer is
    gone; then records are yielded as they come, across rotations, until it
    says so and the files are read to their end.  attach: see _walk."""
    def emit(f: IO[bytes], k: int | None, hold_torn: bool, keep: Keep,
             fast_from: Position | None) -> Iterator[Record]:
        for off, rec in _records(f, hold_torn):
            if keep(k, off, rec):
                yield rec
    return _walk(path, tail, since, follow, poll, emit, attach)


def read_output(path: str, *, tail: int | None = None, since: bytes | None = None, follow: Follow | None = None,
                timestamps: bool = False, poll: float = 0.1,
                attach: bool | IO[bytes] = False) -> Iterator[tuple[str, bytes]]:
    """What render(read(...)) gives, (stream, bytes) to print, but a block of
    full lines of one stream at a time where it can: turning each record into
    Python objects reads ~45 MB/s, slower than a shim writes (so `run` in the
    foreground fell a whole cap behind and lost lines); slicing the fixed-
    width prefixes off a block's lines reads ~600 MB/s."""
    line_start = {"stdout": True, "stderr": True}

    def emit(f: IO[bytes], k: int | None, hold_torn: bool, keep: Keep,
             fast_from: Position | None) -> Iterator[tuple[str, bytes]]:
        while True:
            pos = f.tell()
            data = f.read(BLOCK)
            if not data:
                return
            cut = data.rfind(_NL) + 1
            if cut == 0:        # a last line still being written, or one longer than a block (not ours)
                f.seek(pos)
                yield from _render(((r for off, r in _records(f, hold_torn) if keep(k, off, r))),
                                   timestamps, line_start)
                return
            f.seek(pos + cut)
            block = data[:cut]
            fast = (fast_from is None or (k, pos) >= fast_from) and (not since or block[:30] >= since)
            if fast and not timestamps:
                out = _full_block(block)
                if out is not None:
                    line_start[out[0]] = True
                    yield out
                    continue
            lines = block.split(_NL)
            lines.pop()
            if fast:
                out = _full_lines(lines, timestamps, line_start)
                if out is not None:
                    yield out
                    continue
            yield from _render(_kept(lines, k, pos, keep), timestamps, line_start)
    return _walk(path, tail, since, follow, poll, emit, attach)


def _full_block(block: bytes) -> tuple[str, bytes] | None:
    """(stream, content) if block is full records of one stream, else None,
    without a Python step per line: the relay stamps every record of one
    read alike, so a block has a few distinct 40-byte prefixes, each cut
    with one bytes.replace of "\n" + prefix (a newline precedes only a line's
    start).  The replacements must account for every line."""
    mark = block[29:38]
    stream = _MARKS.get(mark)
    if stream is None or b"Z stdout P " in block or b"Z stderr P " in block \
            or (b"Z stderr " if stream == "stdout" else b"Z stdout ") in block:
        return None             # (content that looks like a prefix only costs the slow way)
    full = mark + b"F "
    data = _NL + block
    out, pos, replaced = data, 0, 0
    for _ in range(16):         # a block of many reads' records: the slow way is cheaper
        prefix = block[pos:pos + 40]
        if prefix[29:] != full:
            return None
        key = _NL + prefix
        replaced += data.count(key)
        out = out.replace(key, _NL)
        pos = block.find(_NL, data.rfind(key)) + 1
        if pos >= len(block):
            break
    else:
        return None
    if replaced != block.count(_NL):
        return None
    return stream, out[1:]


def _full_lines(lines: list[bytes], timestamps: bool, line_start: dict[str, bool]) -> tuple[str, bytes] | None:
    """(stream, output) if the lines are all records of one stream with our
    fixed-width timestamp (and, with timestamps, all full lines), else None."""
    mark = lines[0][29:38]
    stream = _MARKS.get(mark)
    if stream is None or not all(line[29:38] == mark and line[38:40] in _TAGS for line in lines):
        return None
    if timestamps:
        if not line_start[stream] or not all(line[38] == 70 for line in lines):     # 70: F
            return None
        return stream, _NL.join([line[:30] + line[39:] for line in lines]) + _NL
    line_start[stream] = lines[-1][38] == 70
    return stream, b"".join([line[40:] + _NL if line[38] == 70 else line[40:] for line in lines])


_MARKS = {b"Z stdout ": "stdout", b"Z stderr ": "stderr"}
_TAGS = (b"F ", b"P ")


def _kept(lines: list[bytes], k: int | None, pos: int, keep: Keep) -> Iterator[Record]:
    off = pos
    for line in lines:
        rec = parse(line)
        if keep(k, off, rec):
            yield rec
        off += len(line) + 1


def _walk(path: str, tail: int | None, since: bytes | None, follow: Follow | None, poll: float,
          emit: Callable[[IO[bytes], int | None, bool, Keep, Position | None], Iterator[_T]],
          attach: bool | IO[bytes] = False) -> Iterator[_T]:
    """read()'s walk over the files: where to begin (tail, since), then on
    through the newer files, then (follow) across rotations.  emit(f, k,
    hold_torn, keep, fast_from) yields what to give for file f (index k in
    the files opened first, None once following) from its position to its
    end; keep(k, offset, record) says whether a record is wanted; every
    record at or after fast_from is (None: all), since allowing.

    attach (True, or a file held locked since before the container started,
    see hold): hold a shared flock on each file until it is read, so that the
    relay, which must drop the oldest file to rotate, waits for this reader
    (and the container for the relay), as Docker's attach holds a container
    back for a slow terminal.  Without it a reader more than the whole cap
    behind a flood loses what was dropped."""
    files = _open_all(path)
    if attach is not True and attach:
        # The held file must be among them: _open_all lists names, then opens
        # them, and a rotation in between moves "NAME" on to the next file, so
        # the held one (NAME.1 by then) would be missed and, once let go,
        # dropped unread.  Held, it cannot be dropped: listing again finds it.
        held = os.fstat(attach.fileno()).st_ino
        for _ in range(100):
            if held in {os.fstat(f.fileno()).st_ino for f in files}:
                break
            for f in files:
                f.close()
            files = _open_all(path)
    if attach:
        for f in files:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        if attach is not True:
            attach.close()      # a file held since before the start (hold): ours are locked now
    try:
        starts: dict[str, Position] = {}
        everyone = (0, 0)
        if tail is not None and tail <= 0:
            everyone = (len(files) - 1, os.fstat(files[-1].fileno()).st_size) if files else (0, 0)
        elif tail is not None:
            starts, everyone = _tail_starts(files, tail)
        elif since:
            everyone = (_since_start(files, since), 0)
        first = min([everyone, *starts.values()])
        fast_from = max([everyone, *starts.values()])

        def keep(k: int | None, off: int, rec: Record) -> bool:
            if k is not None and (k, off) < starts.get(rec.stream, everyone):
                return False
            return not since or rec.time >= since
        for k in range(len(files)):
            if k >= first[0]:
                files[k].seek(first[1] if k == first[0] else 0)
                yield from emit(files[k], k, follow is not None and k == len(files) - 1, keep, fast_from)
            if k < len(files) - 1:
                files[k].close()        # done with it: let the relay drop it
        if follow is None:
            return
        while not files:        # not made yet
            if follow(poll):
                return
            files = _open_all(path)
            if attach and files:
                fcntl.flock(files[-1].fileno(), fcntl.LOCK_SH)
        f, done = files.pop(), False
        try:
            while True:
                before = f.tell()
                yield from emit(f, None, True, keep, None)
                busy = f.tell() != before
                nxt = _successor(path, f)
                if nxt is not None:
                    if attach:
                        fcntl.flock(nxt.fileno(), fcntl.LOCK_SH)
                    yield from emit(f, None, False, keep, None)     # what it got before the rotation
                    f.close()
                    f = nxt
                    continue
                if done:
                    yield from emit(f, None, False, keep, None)
                    return
                # a writer that is busy can fill a whole cap in a poll interval
                done = follow(poll / 10 if busy else poll)
        finally:
            f.close()
    finally:
        for f in files:
            f.close()


def hold(path: str) -> IO[bytes] | None:
    """The live log file, open, with the shared flock an attached reader
    takes: taken before a start and handed to read_output(attach=...), it
    keeps rotation from dropping what the container writes first, before
    the reader has opened the files.  None if there is no log yet."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    fcntl.flock(f.fileno(), fcntl.LOCK_SH)
    return f


def render(records: Iterable[Record], timestamps: bool = False) -> Iterator[tuple[str, bytes]]:
    """(stream, bytes) to print for each record: its content, the newline once
    its line is full, and with timestamps the time at the start of a line."""
    return _render(records, timestamps, {"stdout": True, "stderr": True})


def _render(records: Iterable[Record], timestamps: bool, line_start: dict[str, bool]) -> Iterator[tuple[str, bytes]]:
    for rec in records:
        out = rec.content if rec.partial else rec.content + _NL
        if timestamps and line_start[rec.stream] and rec.time:
            out = rec.time + b" " + out
        line_start[rec.stream] = not rec.partial
        yield rec.stream, out
