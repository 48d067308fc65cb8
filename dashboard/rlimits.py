"""The web process's descriptor limit, raised at start.

Daphne serves every socket, the SQLite files and the live sampler's kept-open
kernel files from one process, and the soft limit it inherits is often 1024
(systemd services, login shells).  The hard limit is what the administrator
allows; the soft one is only a default, so we take the hard one."""
import resource

# With no hard limit, as much as the kernel's default fs.nr_open.
_UNLIMITED_TARGET = 1 << 20


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; → (soft, hard) in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):            # above fs.nr_open: keep what we had
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)
