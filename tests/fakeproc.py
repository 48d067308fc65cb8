"""A fake procfs tree for the /proc parsers' and procs.py's tests: the files
a process has, in the kernel's own format, under a temp dir."""
import os

from runtime.procs import PF_KTHREAD


def stat_line(pid, comm, state="S", ppid=1, flags=0x400000, utime=7, stime=3, threads=1,
              start=5000, rss=100):
    """A /proc/<pid>/stat line with the given fields at their proc(5) positions."""
    f = ["0"] * 52
    f[0], f[1], f[2], f[3], f[8] = str(pid), f"({comm})", state, str(ppid), str(flags)
    f[13], f[14], f[19], f[21], f[23] = str(utime), str(stime), str(threads), str(start), str(rss)
    return " ".join(f) + "\n"


class FakeProc:
    def __init__(self, root):
        self.root = str(root)

    def add(self, pid, comm, ppid=1, cmdline=b"", nspid=None, uid=0, vmrss_kb=None,
            kthread=False, state="S", ns=None, utime=7, stime=3):
        d = os.path.join(self.root, str(pid))
        os.makedirs(os.path.join(d, "ns"), exist_ok=True)
        flags = 0x400000 | (PF_KTHREAD if kthread else 0)
        self._write(d, "stat", stat_line(pid, comm, state=state, ppid=ppid, flags=flags,
                                         utime=utime, stime=stime, rss=0 if kthread else 50))
        status = (f"Name:\t{comm}\nState:\t{state} (sleeping)\nPPid:\t{ppid}\n"
                  f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nNSpid:\t" + "\t".join(map(str, nspid or [pid]))
                  + "\nThreads:\t1\n")
        if vmrss_kb is not None:
            status += f"VmRSS:\t{vmrss_kb:8d} kB\n"
        self._write(d, "status", status)
        self._write(d, "cmdline", cmdline)
        self._write(d, "comm", comm + "\n")
        for t, ino in (ns or {}).items():
            os.symlink(f"{t}:[{ino}]", os.path.join(d, "ns", t))

    @staticmethod
    def _write(d, name, data):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
