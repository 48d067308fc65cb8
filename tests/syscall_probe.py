"""A static x86-64 program that makes one raw system call and exits with its errno.

The built-in images hold busybox only (no keyctl, no io_uring, no compiler
here), so the seccomp tests need a way to make the exact call from inside a
container.  This writes a ~200-byte ELF: no libc, one syscall instruction with
the arguments baked in, then exit_group(0) on success or exit_group(errno).
Pointer arguments may point into a zeroed scratch area (SCRATCH) or at
strings placed after the code (see probe()).
"""
from __future__ import annotations

import struct

BASE = 0x400000
SCRATCH = BASE + 0x1000         # 4 KiB of zeroes, writable (a .bss)

# x86-64 syscall numbers
SYS = {"add_key": 248, "keyctl": 250, "io_uring_setup": 425, "unshare": 272, "clone": 56,
       "clone3": 435, "personality": 135, "socket": 41, "userfaultfd": 323, "bpf": 321,
       "getpid": 39, "mount": 165}

_ARG_REGS = (b"\x48\xbf", b"\x48\xbe", b"\x48\xba", b"\x49\xba", b"\x49\xb8", b"\x49\xb9")  # mov rdi/rsi/rdx/r10/r8/r9, imm64


def probe(syscall: str | int, *args, strings: tuple[bytes, ...] = ()) -> bytes:
    """The ELF file's bytes.  An arg may be an int, or ("str", i) for the address
    of strings[i] (NUL-terminated here)."""
    nr = SYS[syscall] if isinstance(syscall, str) else syscall
    header_size = 64 + 56
    # code first (its size is fixed: every mov is 10 bytes), then the strings
    code_len = 10 * (1 + len(args)) + len(_TAIL)
    addr, data, where = BASE + header_size + code_len, b"", []
    for s in strings:
        where.append(addr + len(data))
        data += s + b"\0"
    code = b"\x48\xb8" + struct.pack("<Q", nr)                      # mov rax, nr
    for reg, arg in zip(_ARG_REGS, args):
        value = where[arg[1]] if isinstance(arg, tuple) else arg
        code += reg + struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)
    code += _TAIL
    assert len(code) == code_len
    body = code + data
    filesz = header_size + len(body)
    ehdr = struct.pack("<4sBBBBB7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0,
                       2, 0x3E, 1, BASE + header_size, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    # one PT_LOAD, rwx, file then zeroes up to the end of the scratch page
    phdr = struct.pack("<IIQQQQQQ", 1, 7, 0, BASE, BASE, filesz, SCRATCH + 0x1000 - BASE, 0x1000)
    return ehdr + phdr + body


# syscall; test rax,rax; js err; xor edi,edi; jmp out; err: mov rdi,rax; neg rdi;
# out: mov eax,231 (exit_group); syscall
_TAIL = (b"\x0f\x05" b"\x48\x85\xc0" b"\x78\x04" b"\x31\xff" b"\xeb\x06"
         b"\x48\x89\xc7" b"\x48\xf7\xdf" b"\xb8\xe7\x00\x00\x00" b"\x0f\x05")
