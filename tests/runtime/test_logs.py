"""Container logs (runtime/logs.py): the format, the shim's relay, rotation,
and readers that stay small whatever the log's size."""
from __future__ import annotations

import os
import random
import subprocess
import time

import pytest

from runtime import InvalidArgument, LogConfig, Spec, logs
from runtime.spec import parse_log_opts
from tests.conftest import CLI, cli, is_root

root_only = pytest.mark.skipif(not is_root(), reason="needs root (namespaces, cgroups, mounts)")


# ------------------------------------------------------------------ format

def test_parse_full_partial_and_streams():
    assert logs.parse(b"2026-11-30T20:00:00.123456789Z stdout F hello world") == \
        logs.Record(b"2026-11-30T20:00:00.123456789Z", "stdout", False, b"hello world")
    assert logs.parse(b"2026-11-30T20:00:00.123456789Z stderr P  two  spaces ") == \
        logs.Record(b"2026-11-30T20:00:00.123456789Z", "stderr", True, b" two  spaces ")
    assert logs.parse(b"2026-11-30T20:00:00.000000000Z stdout F ").content == b""
    assert logs.parse(b"2026-11-30T20:00:00.000000000Z stdout F").content == b""


@pytest.mark.parametrize("line", [b"plain output from before records", b"", b"a stdout F b",
                                  b"2026-11-30T20:00:00Z stdin F x", b"2026-11-30T20:00:00Z stdout X x"])
def test_a_line_that_is_no_record_is_stdout_content(line):
    assert logs.parse(line) == logs.Record(b"", "stdout", False, line)


def test_format_time_is_fixed_width_utc():
    assert logs.format_time(1764532800_000000005) == b"2025-11-30T20:00:00.000000005Z"


@pytest.mark.parametrize("text, expected", [
    ("2026-11-30T20:00:00Z", b"2026-11-30T20:00:00.000000000Z"),
    ("2026-11-30T20:00:00.123456789Z", b"2026-11-30T20:00:00.123456789Z"),
    ("2026-11-30T21:00:00.5+01:00", b"2026-11-30T20:00:00.500000000Z"),
    ("1764532800", b"2025-11-30T20:00:00.000000000Z"),
    ("1764532800.25", b"2025-11-30T20:00:00.250000000Z"),
    ("10m", b"2026-11-30T19:50:00.000000000Z"),
    ("1h30m", b"2026-11-30T18:30:00.000000000Z"),
    ("1.5s", b"2026-11-30T19:59:58.500000000Z"),
])
def test_parse_since(text, expected):
    now = 1796068800 * 10**9            # 2026-11-30T20:00:00Z
    assert logs.parse_since(text, now_ns=now) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "10 minutes", "-5m", "2026-13-01", "5d", "1" * 400 + "s",
                                  "9" * 30, "١٠m", "2026-11-30T20:00:00\0Z"])
def test_bad_since_is_one_clear_error(text):
    with pytest.raises(InvalidArgument, match="invalid --since"):
        logs.parse_since(text)


@root_only
def test_the_api_checks_a_log_config_as_the_cli_does(rt):
    for bad, message in ((LogConfig(100, 3), "too small"), (LogConfig(1 << 20, 0), "max-file"), ((1, 2), "LogConfig")):
        with pytest.raises(InvalidArgument, match=message):
            rt.create(Spec(image="busybox", cmd=("true",), log=bad))


def test_log_opts():
    assert parse_log_opts([]) == LogConfig(10 << 20, 3)
    assert parse_log_opts(["max-size=64k", "max-file=5"]) == LogConfig(64 << 10, 5)
    for bad, message in ((["max-size=1k"], "too small"), (["max-file=0"], "max-file"),
                         (["max-file=٣"], "max-file"), (["colour=red"], "unknown log option"),
                         (["max-size"], "KEY=VALUE"), (["max-size=lots"], "invalid log max-size")):
        with pytest.raises(InvalidArgument, match=message):
            parse_log_opts(bad)


# ------------------------------------------------------ writer, on a file

def _write_chunks(path, chunks, max_size, max_file):
    """Append (stream, bytes) chunks as the relay does, one timestamp each."""
    fd = logs.open_log(path)
    size = os.lseek(fd, 0, os.SEEK_END)
    for i, (stream, data) in enumerate(chunks):
        prefix = logs.format_time(1796068800 * 10**9 + i) + f" {stream} ".encode()
        fd, size = logs._append(fd, size, prefix, data, path, max_size, max_file)
    os.close(fd)


def _random_chunks(rng, n):
    out = []
    for _ in range(n):
        stream = rng.choice(("stdout", "stderr"))
        lines = [bytes(rng.choice(b"abc ") for _ in range(rng.choice((0, 1, 5, 80)))) for _ in range(rng.randint(1, 4))]
        data = b"\n".join(lines) + (b"\n" if rng.random() < 0.6 else b"")
        if data:
            out.append((stream, data))
    return out


def test_records_keep_each_streams_bytes_across_rotations(tmp_path):
    path = str(tmp_path / "container.log")
    chunks = _random_chunks(random.Random(1), 3000)
    _write_chunks(path, chunks, max_size=32 << 10, max_file=100)
    assert len(logs.log_files(path)) > 3                       # it rotated
    assert all(os.path.getsize(f) <= 32 << 10 for f in logs.log_files(path))
    got = {"stdout": b"", "stderr": b""}
    for stream, data in logs.render(logs.read(path)):
        got[stream] += data
    for stream in got:
        assert got[stream] == b"".join(d for s, d in chunks if s == stream)


def test_an_attached_reader_reads_the_held_file_though_a_rotation_came_first(tmp_path, monkeypatch):
    """The race a foreground run lost its first file to: the reader lists the
    log's names, the relay rotates, then the reader opens "NAME", which is the
    new file by then.  The file held since before the start must still be read."""
    path = str(tmp_path / "container.log")
    _write_chunks(path, [("stdout", b"first\n")], 1 << 20, 2)
    held = logs.hold(path)
    stale = [path]                                  # what a listing saw before the rotation
    os.close(logs.rotate(logs.open_log(path), path, 2))    # NAME -> NAME.1 (the held one), new NAME
    _write_chunks(path, [("stdout", b"second\n")], 1 << 20, 2)
    real, calls = logs.log_files, []

    def listing(p):                                 # the first listing is the stale one
        calls.append(p)
        return stale if len(calls) == 1 else real(p)
    monkeypatch.setattr(logs, "log_files", listing)
    got = [rec.content for rec in logs.read(path, attach=held)]
    assert got == [b"first", b"second"] and len(calls) == 2


def test_the_cap_holds_and_the_oldest_file_goes(tmp_path):
    path = str(tmp_path / "container.log")
    _write_chunks(path, [("stdout", b"%08d\n" % i * 50) for i in range(2000)], max_size=32 << 10, max_file=3)
    files = logs.log_files(path)
    assert [os.path.basename(f) for f in files] == ["container.log.2", "container.log.1", "container.log"]
    assert sum(os.path.getsize(f) for f in files) <= 3 * (32 << 10)
    last = [r.content for r in logs.read(path)][-1]
    assert last == b"%08d" % 1999


def test_max_file_1_replaces_the_file(tmp_path):
    path = str(tmp_path / "container.log")
    _write_chunks(path, [("stdout", b"x" * 99 + b"\n")] * 2000, max_size=32 << 10, max_file=1)
    assert logs.log_files(path) == [path] and os.path.getsize(path) <= 32 << 10
    assert not [n for n in os.listdir(tmp_path) if n != "container.log"]


def _reference_tail(records, n):
    """The last n lines, by the definition: a line is a stream's records up to
    its F record (or a run still open at the end); lines counted by where they end."""
    ends, open_line = [], {}
    for i, r in enumerate(records):
        open_line.setdefault(r.stream, []).append(i)
        if not r.partial:
            ends.append((i, open_line.pop(r.stream)))
    ends += [(idx[-1], idx) for idx in open_line.values()]
    keep = sorted(i for _, idx in sorted(ends)[-n:] for i in idx) if n else []
    return [records[i] for i in keep]


@pytest.mark.parametrize("seed", range(6))
def test_tail_matches_the_definition(tmp_path, seed):
    rng = random.Random(seed)
    path = str(tmp_path / "container.log")
    _write_chunks(path, _random_chunks(rng, 1500), max_size=32 << 10, max_file=100)
    records = list(logs.read(path))
    for n in (0, 1, 2, 3, 7, 50, 400, 10**6):
        assert list(logs.read(path, tail=n)) == _reference_tail(records, n), n


def _merged(pieces):
    out = []
    for stream, data in pieces:
        if out and out[-1][0] == stream:
            out[-1] = (stream, out[-1][1] + data)
        else:
            out.append((stream, data))
    return out


@pytest.mark.parametrize("seed", range(2))
def test_read_output_is_render_of_read_only_faster(tmp_path, seed, monkeypatch):
    rng = random.Random(seed)
    path = str(tmp_path / "container.log")
    chunks = [("stdout", b"%06d filler filler\n" % i * (400 if i % 3 else 40)) for i in range(60)]
    chunks[30:30] = _random_chunks(rng, 300)                                        # and a mixed stretch
    chunks += [("stderr", b"late\n" * 500), ("stdout", b"open")]
    _write_chunks(path, chunks, max_size=256 << 10, max_file=100)
    fast = logs._full_block
    used = []
    monkeypatch.setattr(logs, "_full_block", lambda block: used.append(fast(block)) or used[-1])
    since = logs.format_time(1796068800 * 10**9 + 200)
    for kw in ({}, {"tail": 3}, {"tail": 700}, {"tail": 10**6}, {"since": since}, {"since": since, "tail": 50}):
        for stamps in (False, True):
            assert _merged(logs.read_output(path, timestamps=stamps, **kw)) == \
                _merged(logs.render(logs.read(path, **kw), stamps)), (kw, stamps)
    assert any(used) and None in used          # both ways were taken


def test_tail_keeps_a_line_whose_pieces_straddle_another_stream(tmp_path):
    path = str(tmp_path / "container.log")
    _write_chunks(path, [("stdout", b"old\n"), ("stdout", b"abc"), ("stderr", b"err\n"), ("stdout", b"def\n")],
                  max_size=1 << 20, max_file=2)
    assert b"".join(d for _, d in logs.render(logs.read(path, tail=1))) == b"abcdef\n"
    assert [(s, d) for s, d in logs.render(logs.read(path, tail=2))] == \
        [("stdout", b"abc"), ("stderr", b"err\n"), ("stdout", b"def\n")]


def test_since_and_timestamps(tmp_path):
    path = str(tmp_path / "container.log")
    _write_chunks(path, [("stdout", b"%d\n" % i) for i in range(10)], max_size=1 << 20, max_file=2)
    since = logs.format_time(1796068800 * 10**9 + 7)
    assert [r.content for r in logs.read(path, since=since)] == [b"7", b"8", b"9"]
    assert list(logs.render(logs.read(path, tail=1), timestamps=True)) == \
        [("stdout", b"2026-11-30T20:00:00.000000009Z 9\n")]


def test_a_log_from_before_records_reads_as_it_was(tmp_path):
    path = str(tmp_path / "container.log")
    with open(path, "wb") as f:
        f.write(b"one\ntwo\nthree\n")
    assert b"".join(d for _, d in logs.render(logs.read(path, tail=2))) == b"two\nthree\n"


def test_tail_of_a_huge_file_reads_little(tmp_path):
    """A 200 MB file (one file: no cap from the writer here): --tail reads a block or two."""
    path = str(tmp_path / "container.log")
    rec = b"2026-11-30T20:00:00.000000000Z stdout F " + b"z" * 60 + b"\n"
    block = rec * (1 << 14)
    with open(path, "wb") as f:
        for _ in range((200 << 20) // len(block)):
            f.write(block)
        f.write(rec.replace(b"z" * 60, b"last".ljust(60, b"!")))
    try:
        before = _read_bytes()
        got = list(logs.read(path, tail=10))
        assert len(got) == 10 and got[-1].content.startswith(b"last")
        assert _read_bytes() - before < 1 << 20
    finally:
        os.unlink(path)                 # pytest keeps its last temp dirs: not 200 MB of them


def _read_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


# --------------------------------------------------- relay, with real pipes

def _relay(tmp_path, script, max_size=1 << 20, max_file=3):
    """Run script with sh, its stdout and stderr relayed into a log as the shim does."""
    path = str(tmp_path / "container.log")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    proc = subprocess.Popen(["/bin/busybox", "sh", "-c", script], stdin=subprocess.DEVNULL,
                            stdout=out_w, stderr=err_w)
    os.close(out_w)
    os.close(err_w)
    pidfd = os.pidfd_open(proc.pid)
    try:
        logs.relay(out_r, err_r, pidfd, path, max_size, max_file)
    finally:
        for fd in (out_r, err_r, pidfd):
            os.close(fd)
        proc.wait()
    return path


def test_relay_records_streams_pieces_and_long_lines(tmp_path):
    path = _relay(tmp_path, "echo out; echo err >&2; printf abc; sleep 0.5; echo def; "
                            "head -c 40000 /dev/zero | tr '\\0' L; echo")
    records = list(logs.read(path))
    # two pipes: the order holds within a stream (between them, only as the relay saw it)
    assert [(r.stream, r.partial, r.content) for r in records[:4] if r.stream == "stdout"] == \
        [("stdout", False, b"out"), ("stdout", True, b"abc"), ("stdout", False, b"def")]
    assert [(r.stream, r.partial, r.content) for r in records if r.stream == "stderr"] == \
        [("stderr", False, b"err")]
    assert records[0].time <= records[1].time <= records[3].time
    long = records[4:]
    assert all(r.partial for r in long[:-1]) and not long[-1].partial
    assert all(len(r.content) <= logs.READ_SIZE for r in long) and len(long) >= 3
    assert b"".join(r.content for r in long) == b"L" * 40000
    assert b"".join(d for _, d in logs.render(logs.read(path, tail=1))) == b"L" * 40000 + b"\n"
    with open(path, "rb") as f:
        assert all(line.split(b" ")[0].endswith(b"Z") for line in f)


def test_relay_drains_what_is_left_when_the_process_exits(tmp_path):
    # the process is gone before the relay reads anything: all of it is still there
    path = _relay(tmp_path, "head -c 60000 /dev/zero | tr '\\0' x; exec true")
    assert sum(len(r.content) for r in logs.read(path)) == 60000


def test_relay_ends_even_if_someone_else_holds_a_write_end(tmp_path):
    # a background child keeps both pipes open after the process the pidfd watches exits
    t0 = time.monotonic()
    path = _relay(tmp_path, f"echo first; sleep 20 & echo $! > {tmp_path}/pid")
    try:
        assert time.monotonic() - t0 < 15
        assert [r.content for r in logs.read(path)] == [b"first"]
    finally:
        os.kill(int(open(f"{tmp_path}/pid").read()), 9)


def test_relay_watches_descriptors_above_1023(tmp_path):
    # select() cannot; the relay's poll must
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2100:
        pytest.skip(f"the hard descriptor limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2100), hard))
    path = str(tmp_path / "container.log")
    fds = []
    try:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        proc = subprocess.Popen(["/bin/busybox", "sh", "-c", "echo high; echo er >&2"],
                                stdout=out_w, stderr=err_w)
        pidfd = os.pidfd_open(proc.pid)
        for fd, high in ((out_r, 2001), (err_r, 2002), (pidfd, 2003)):
            fds.append(os.dup2(fd, high))
        for fd in (out_r, out_w, err_r, err_w, pidfd):
            os.close(fd)
        logs.relay(2001, 2002, 2003, path, 1 << 20, 3)
        proc.wait()
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert sorted((r.stream, r.content) for r in logs.read(path)) == [("stderr", b"er"), ("stdout", b"high")]


def test_relay_keeps_the_cap(tmp_path):
    path = _relay(tmp_path, "yes 0123456789012345678901234567890123456789 | head -c 2870000",
                  max_size=64 << 10, max_file=3)
    files = logs.log_files(path)
    assert len(files) == 3 and all(os.path.getsize(f) <= 64 << 10 for f in files)
    assert list(logs.read(path))[-1].content == b"0123456789012345678901234567890123456789"


# ------------------------------------------------- containers, real kernel

def _on_disk(c) -> int:
    total = 0
    for f in logs.log_files(c.log_path):
        try:
            total += os.path.getsize(f)
        except FileNotFoundError:
            pass
    return total


# The `terrarium` command, reporting its peak RSS (VmHWM) as it exits.  Not
# wait4's ru_maxrss: that also counts the forked copy of this (large) pytest
# process the child was before its exec.
_MEASURED = ("import atexit, sys\n"
             "def hwm():\n"
             "    with open('/proc/self/status') as f:\n"
             "        sys.stderr.write(next(l for l in f if l.startswith('VmHWM:')))\n"
             "atexit.register(hwm)\n"
             "from runtime.client import main\n"
             "main()\n")


def _peak_rss_kb(args) -> tuple[int, bytes]:
    """Run `terrarium ARGS` in-process (TERRARIUM_CLI_LOCAL=1); its peak RSS in kB and its stdout."""
    env = dict(os.environ, TERRARIUM_CLI_LOCAL="1")
    r = subprocess.run([os.path.join(os.path.dirname(CLI), "python"), "-c", _MEASURED, *args],
                       capture_output=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return int(r.stderr.split(b"VmHWM:")[1].split()[0]), r.stdout


@root_only
def test_a_flood_stays_under_the_cap_and_tail_stays_small(rt, name, cleanup):
    cleanup.append(name)
    line = "0123456789" * 9 + "abcdefghi"                         # 100 bytes with its newline
    c = rt.run(Spec(image="busybox", name=name, log=LogConfig(10 << 20, 3),
                    cmd=("sh", "-c", f"yes {line} | head -c 300m")))
    cap = (10 << 20) * 3 + logs.RECORD_MAX
    seen, deadline = [], time.monotonic() + 300
    while rt.inspect(c.id).status == "running" and time.monotonic() < deadline:
        seen.append(_on_disk(c))
        time.sleep(0.01)
    c = rt.wait(c.id, timeout=10)
    seen.append(_on_disk(c))
    assert c.exit_code == 0 and len(seen) > 20
    assert max(seen) <= cap, max(seen)
    assert seen[-1] > 20 << 20                                     # two full old files: it rotated
    assert len(logs.log_files(c.log_path)) == 3
    rss, out = _peak_rss_kb(["logs", "--tail", "10", name])
    assert out.decode().splitlines() == [line] * 10
    assert rss < 20 << 10, f"logs --tail 10 peaked at {rss} kB"


@root_only
def test_follow_across_rotations_loses_and_repeats_nothing(rt, name, cleanup):
    cleanup.append(name)
    n = 12000                                                      # ~45 bytes a record: ~17 rotations
    script = ("sleep 1; i=0; while [ $i -lt %d ]; do echo line-$i; i=$((i+1)); "
              "[ $((i %% 500)) -eq 0 ] && sleep 0.1; done; true") % n
    assert cli("run", "-d", "--name", name, "--log-opt", "max-size=32k", "--log-opt", "max-file=10",
               "busybox", "sh", "-c", script).returncode == 0
    follower = subprocess.Popen([CLI, "logs", "-f", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err
    lines = out.decode().splitlines()
    assert lines == [f"line-{i}" for i in range(n)]
    c = rt.inspect(name)
    assert len(logs.log_files(c.log_path)) == 10                   # it did rotate, more than once
    assert int(os.path.basename(logs.log_files(c.log_path)[0]).rsplit(".", 1)[1]) == 9


@root_only
def test_logs_cli_streams_partial_lines_since_and_timestamps(rt, name, cleanup):
    cleanup.append(name)
    r = cli("run", "--name", name, "busybox", "sh", "-c",
            "echo before; echo oops >&2; printf 'abc'; sleep 1.2; echo def; echo after")
    assert (r.returncode, r.stdout, r.stderr) == (0, "before\nabcdef\nafter\n", "oops\n")
    r = cli("logs", name)
    assert (r.stdout, r.stderr) == ("before\nabcdef\nafter\n", "oops\n")
    records = list(rt.log_records(name))
    out = [x for x in records if x.stream == "stdout"]    # two pipes: no order between the streams
    assert [(x.partial, x.content) for x in out] == [
        (False, b"before"), (True, b"abc"), (False, b"def"), (False, b"after")]
    assert [(x.stream, x.partial, x.content) for x in records if x.stream == "stderr"] == [
        ("stderr", False, b"oops")]
    since = out[2].time.decode()
    assert cli("logs", "--since", since, name).stdout == "def\nafter\n"
    assert cli("logs", "--since", "10m", name).stdout == "before\nabcdef\nafter\n"
    assert cli("logs", "--tail", "1", name).stdout == "after\n"
    assert cli("logs", "--tail", "all", name).stdout == "before\nabcdef\nafter\n"
    stamped = cli("logs", "-t", "--tail", "2", name).stdout.splitlines()
    assert stamped == [f"{out[1].time.decode()} abcdef", f"{out[3].time.decode()} after"]


@root_only
def test_logs_cli_stream_grep_and_until(rt, name, cleanup):
    # the dashboard's filters (runtime/logfilter.py), also through the agent
    cleanup.append(name)
    r = cli("run", "--name", name, "busybox", "sh", "-c",
            "echo Alpha one; echo alpha two >&2; printf 'beta '; sleep 1.2; echo ALPHA three; echo gamma")
    assert r.returncode == 0
    out = [x for x in rt.log_records(name) if x.stream == "stdout"]
    late = out[3].time.decode()                            # "gamma"; a line's time is its start's
    agent = dict(os.environ, TERRARIUM_AGENT="1")
    for env in (None, agent):
        def logs_(*args):
            r = subprocess.run([CLI, "logs", *args, name], capture_output=True, text=True, timeout=60,
                               env=env or os.environ.copy())
            assert r.returncode == 0, r.stderr
            return r.stdout, r.stderr
        assert logs_("--grep", "alpha") == ("Alpha one\nbeta ALPHA three\n", "alpha two\n")
        assert logs_("--stream", "stderr") == ("", "alpha two\n")
        assert logs_("--stream", "stdout", "-g", "ALPHA") == ("Alpha one\nbeta ALPHA three\n", "")
        assert logs_("--until", late) == ("Alpha one\nbeta ALPHA three\n", "alpha two\n")
        assert logs_("-n", "1", "--grep", "gamma") == ("gamma\n", "")
        stamped = logs_("-t", "--grep", "gamma", "--stream", "stdout")[0]
        assert stamped == f"{out[-1].time.decode()} gamma\n"
    r = cli("logs", "--stream", "both", name)
    assert r.returncode == 125 and "invalid choice" in r.stderr
    r = cli("logs", "--until", "later", name)
    assert r.returncode == 125 and r.stderr.startswith("terrarium: error: invalid --since 'later'")


@root_only
def test_a_failed_start_says_why_in_the_log(rt, name, cleanup):
    cleanup.append(name)
    assert cli("run", "--name", name, "busybox", "no-such-program").returncode == 127
    r = cli("logs", name)
    assert r.stdout == ""
    assert r.stderr == 'terrarium: exec: "no-such-program": executable file not found in $PATH\n'


@root_only
@pytest.mark.parametrize("opt, message", [
    ("max-size=4k", "log max-size '4k' is too small: the minimum is 32k"),
    ("max-file=x", "invalid log max-file 'x'"),
    ("mode=non-blocking", "unknown log option 'mode'"),
])
def test_bad_log_opts_are_refused_before_anything_is_made(rt, opt, message):
    before = sorted(os.listdir(rt.containers_dir))
    for verb in ("run", "create"):
        r = cli(verb, "--log-opt", opt, "busybox", "true")
        assert r.returncode == 125 and r.stderr.startswith(f"terrarium: error: {message}")
        assert len(r.stderr.splitlines()) == 1
    assert sorted(os.listdir(rt.containers_dir)) == before


@root_only
def test_log_opts_are_kept_in_the_config(rt, name, cleanup):
    cleanup.append(name)
    assert cli("create", "--name", name, "--log-opt", "max-size=1m", "--log-opt", "max-file=2",
               "busybox", "true").returncode == 0
    assert rt.inspect(name).log_config == LogConfig(1 << 20, 2)


@root_only
@pytest.mark.parametrize("args, message", [
    (["--tail", "-3"], 'invalid --tail \'-3\': use a number of lines or "all"'),
    (["--tail", "٣"], 'invalid --tail \'\\u0663\': use a number of lines or "all"'),
    (["--since", "soon"], "invalid --since 'soon'"),
])
def test_bad_logs_flags_are_one_line(rt, name, cleanup, args, message):
    cleanup.append(name)
    rt.create(Spec(image="busybox", name=name, cmd=("true",)))
    r = cli("logs", *args, name)
    assert r.returncode == 125 and r.stderr.startswith(f"terrarium: error: {message}")
    assert len(r.stderr.splitlines()) == 1


@root_only
def test_run_in_the_foreground_waits_for_a_slow_reader_and_loses_nothing(rt, name, cleanup):
    # a cap of 64 KiB, ~10 MB of records, and a reader that starts late: attached, the
    # container waits for it instead of rotation dropping what it has not read
    cleanup.append(name)
    proc = subprocess.Popen([CLI, "run", "--name", name, "--log-opt", "max-size=32k", "--log-opt", "max-file=2",
                             "busybox", "seq", "1", "200000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1)                      # the pipe to us fills; the container must wait, not lose lines
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out == b"".join(b"%d\n" % i for i in range(1, 200001))


@root_only
def test_logs_follow_never_holds_the_container_back(rt, name, cleanup):
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name, log=LogConfig(32 << 10, 2),
                    cmd=("sh", "-c", "sleep 0.5; seq 1 200000")))
    follower = subprocess.Popen([CLI, "logs", "-f", name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert rt.wait(c.id, timeout=60).exit_code == 0       # while the follower reads nothing
    finally:
        follower.kill()
        follower.communicate()
