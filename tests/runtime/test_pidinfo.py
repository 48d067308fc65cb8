"""The /proc/<pid> parsers (runtime/pidinfo.py), from strings as the kernel
prints them, and the few reads of live processes."""
import os
import signal
import subprocess
import sys
import time

import pytest

from runtime.errors import InvalidArgument
from runtime.pidinfo import (NS_TYPES, catches_signal, memory_cgroup, memory_cgroup_of,
                             namespace_inodes, parse_cgroup, parse_kb, parse_mountinfo,
                             parse_mountinfo_line, parse_ns_link, parse_nspid, parse_sigmask,
                             parse_stat, parse_status, parse_uid, process_start_time, read_text)
from tests.fakeproc import stat_line

# --- reading ------------------------------------------------------------------


def test_read_text_reads_a_seq_file_to_its_end_and_none_when_gone():
    # a process that stands still: its smaps does not change between reads.
    # smaps answers one read with about a page however much is asked for, so
    # a single read would return a fraction of it
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        path = f"/proc/{sleeper.pid}/smaps"
        # Popen returns once exec has begun, when the new mm may hold its stack
        # alone (one mapping, under a page): wait until sleep itself sleeps
        deadline = time.monotonic() + 10
        while not (parse_stat(read_text(f"/proc/{sleeper.pid}/stat") or "").state == "S"
                   and len(read_text(path) or "") > 8192):
            assert time.monotonic() < deadline, "sleep never got to sleep"
            time.sleep(0.01)
        fd = os.open(path, os.O_RDONLY)
        try:
            first = os.read(fd, 65536)
        finally:
            os.close(fd)
        with open(path) as f:
            whole = f.read()
        assert len(first) < len(whole)
        assert read_text(path) == whole
    finally:
        sleeper.kill()
        sleeper.wait()
    assert read_text(path) is None                     # the process is gone
    assert read_text("/proc/self") is None              # a directory: the read fails, None




# --- stat ---------------------------------------------------------------------


def test_stat_fields_by_proc5_numbers():
    st = parse_stat(stat_line(42, "sleep", state="R", ppid=7, utime=11, stime=4, threads=3,
                              start=9999, rss=321))
    assert (st.pid, st.comm, st.state, st.ppid) == (42, "sleep", "R", 7)
    assert (st.utime, st.stime, st.threads, st.start_ticks, st.rss_pages) == (11, 4, 3, 9999, 321)


def test_stat_comm_with_spaces_and_parens():
    # comm may hold any byte but NUL: cut at the last ')', not the first.
    st = parse_stat(stat_line(5, "a b) (c) Z 9"))
    assert st.comm == "a b) (c) Z 9"
    assert (st.state, st.ppid) == ("S", 1)


@pytest.mark.parametrize("text", ["", "12 sleep S 1", "12 (x) S notanint 1"])
def test_stat_rejects_garbage(text):
    with pytest.raises(InvalidArgument):
        parse_stat(text)


def test_status_lines_and_values():
    status = parse_status("Name:\tsh\nUid:\t1000\t1001\t1000\t1000\nNSpid:\t4711\t812\t1\n"
                          "VmRSS:\t    1712 kB\n")
    assert status["NSpid"] == "NSpid:\t4711\t812\t1"
    assert parse_nspid(status["NSpid"]) == (4711, 812, 1)
    assert parse_uid(status["Uid"]) == 1001              # effective, as ps's USER
    assert parse_kb(status["VmRSS"]) == 1712 * 1024
    with pytest.raises(InvalidArgument):
        parse_kb("Threads:\t4")
    text = "Name:\tsh\nUid:\t0\t0\t0\t0\nNSpid:\t4711\t1"        # last line without newline
    assert parse_status(text, ("Name", "NSpid", "VmRSS", "Uid")) == {
        "Name": "Name:\tsh", "NSpid": "NSpid:\t4711\t1", "Uid": "Uid:\t0\t0\t0\t0"}
    assert parse_status(text, ("Name", "NSpid", "Uid")) == parse_status(text)


def test_process_start_time_is_field_22_of_a_live_process():
    with open("/proc/self/stat") as f:
        assert process_start_time(os.getpid()) == parse_stat(f.read()).start_ticks
    p = subprocess.Popen(["true"])
    p.wait()
    assert process_start_time(p.pid) is None           # reaped: gone


# --- status -------------------------------------------------------------------

def test_sigmask_and_catches_signal():
    assert parse_sigmask("SigCgt:\t0000000000004002") == (1 << 1) | (1 << 14)
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: None); "
            "print('ready', flush=True); time.sleep(30)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n"
        assert catches_signal(p.pid, signal.SIGTERM) is True
        assert catches_signal(p.pid, signal.SIGUSR2) is False
    finally:
        p.kill()
        p.wait()
    assert catches_signal(p.pid, signal.SIGTERM) is None   # gone: cannot tell


# --- cgroup -------------------------------------------------------------------

def test_proc_cgroup():
    text = "9:name=systemd:/\n2:cpu,cpuacct:/terrarium/abc\n4:memory:/process_api/95a3\n0::/\n"
    got = parse_cgroup(text)
    assert got["cpu"] == got["cpuacct"] == "/terrarium/abc"
    assert got["memory"] == "/process_api/95a3"
    assert got["name=systemd"] == "/"
    assert got[""] == "/"


def test_memory_cgroup_v1_then_v2():
    v1 = "12:pids:/terrarium/abc\n7:memory:/terrarium/abc\n0::/\n"
    assert memory_cgroup(v1) == "/terrarium/abc"
    assert memory_cgroup("0::/terrarium/def\n") == "/terrarium/def"
    assert memory_cgroup("3:pids:/x\n") is None


def test_memory_cgroup_of_self_matches_the_file():
    with open("/proc/self/cgroup") as f:
        assert memory_cgroup_of(os.getpid()) == memory_cgroup(f.read())
    assert memory_cgroup_of(2 ** 22 + 1) is None          # above pid_max: no such process


# --- mountinfo ----------------------------------------------------------------

MOUNTS = """\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:12 master:3 - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 31 0:40 /sub\\040dir /mnt/my\\040cg rw - cgroup cgroup rw,pids
not a mountinfo line
"""


def test_mountinfo_fields_and_optional_fields():
    mounts = parse_mountinfo(MOUNTS)
    assert len(mounts) == 4
    mem = mounts[1]
    assert (mem.mount_id, mem.parent_id) == (35, 31)
    assert mem.mount_point == "/sys/fs/cgroup/memory"
    assert mem.root == "/"
    assert mem.fstype == "cgroup" and mem.source == "cgroup"
    assert mem.mount_options == "rw,relatime"
    assert mem.super_options == "rw,memory"
    assert mounts[2].fstype == "cgroup2" and mounts[2].super_options == "rw,nsdelegate"


def test_mountinfo_unescapes_octal_and_skips_garbage():
    m = parse_mountinfo(MOUNTS)[3]
    assert m.mount_point == "/mnt/my cg"
    assert m.root == "/sub dir"
    assert parse_mountinfo_line("not a mountinfo line") is None
    assert parse_mountinfo_line("1 0 8:1 / / rw - ext4") is None      # no source


def test_mountinfo_of_self_has_a_root():
    with open("/proc/self/mountinfo") as f:
        text = f.read()
    mounts = parse_mountinfo(text)
    assert len(mounts) == len(text.splitlines())
    assert any(m.mount_point == "/" for m in mounts)


# --- ns -----------------------------------------------------------------------

def test_ns_link():
    assert parse_ns_link("pid_for_children:[4026532181]") == ("pid_for_children", 4026532181)
    assert parse_ns_link("net:[4026531833]") == ("net", 4026531833)
    with pytest.raises(InvalidArgument):
        parse_ns_link("/dev/null")


def test_namespace_inodes_of_self_are_the_links_inodes():
    got = namespace_inodes(os.getpid())
    expected = {t: os.stat(f"/proc/self/ns/{t}").st_ino for t in NS_TYPES
                if os.path.exists(f"/proc/self/ns/{t}")}
    assert got == expected and {"pid", "mnt", "net"} <= set(got)
