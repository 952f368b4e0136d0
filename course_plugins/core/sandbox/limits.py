"""Operating-system confinement of sandbox processes: rlimits, seccomp, namespaces, privileges.

The host builds the seccomp program once (``seccomp_program``, through libseccomp via
``pyseccomp``); the zygote loads it into every child just before the child runs code. The
filter is an allow-list: whatever the interpreter does not need to compute and answer on its
channel fails with ``EPERM`` — ``open``/``openat`` (no file is read or written, not even
created), ``socket``/``connect``, ``execve``, ``fork``/``clone``, ``kill``, ``ptrace``,
``setrlimit``... The zygote also moves itself into a new network namespace (no interface but a
down loopback), and a child started as root drops to ``nobody`` before taking any job.
Everything here degrades gracefully: what the machine does not allow is reported by
``SandboxedExecutor.layers()`` instead of failing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
NOBODY = 65534

# What a forked interpreter needs to finish a computation and write its answer. Anything else
# fails with EPERM (never kills: the interpreter reports an OSError, which is clearer).
ALLOWED_SYSCALLS = (
    "read", "write", "readv", "writev", "close", "lseek",
    "mmap", "munmap", "mremap", "mprotect", "brk", "madvise",
    "rt_sigreturn", "rt_sigprocmask", "sigaltstack",
    "futex", "getrandom", "getpid", "gettid", "sched_yield", "getrusage",
    "clock_gettime", "clock_getres", "gettimeofday", "clock_nanosleep", "nanosleep",
    "exit", "exit_group",
    # Arming the job's own limits after the filter is in (an armed limit cannot be raised:
    # soft = hard, and the process is not root); prlimit64 only on itself (pid 0).
    "setitimer", "setrlimit",
)
SELF_ONLY_SYSCALLS = ("prlimit64",)

# A long-lived worker (``workers.start_worker``) also talks on its socket and may run an event
# loop without threads: socket I/O on descriptors it already has, polling, signal handlers and
# the loop's self-pipe (a pair of unconnected AF_UNIX sockets). Still no open, connect, bind,
# socket, fork/clone or exec.
WORKER_SYSCALLS = (
    "recvfrom", "sendto", "recvmsg", "sendmsg", "shutdown", "getsockopt", "getsockname",
    "poll", "ppoll", "select", "pselect6", "epoll_create1", "epoll_ctl", "epoll_wait",
    "epoll_pwait", "rt_sigaction", "fcntl", "pipe2", "eventfd2", "dup", "dup3", "getuid",
    "geteuid", "getgid", "getegid",
)
_AF_UNIX = 1
_FIONBIO = 0x5421

_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _prctl(option: int, arg: int | Any = 0) -> None:
    if _c().prctl(option, arg, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl({option}): {os.strerror(code)}")


# -- host side ---------------------------------------------------------------------------------


def seccomp_program(*, worker: bool = False) -> tuple[bytes | None, str]:
    """Compile the child filter to BPF; return ``(program, "")`` or ``(None, why not)``.

    ``worker=True`` builds the filter of a long-lived worker (``WORKER_SYSCALLS`` added).
    """
    try:
        import pyseccomp as seccomp
    except ImportError as exc:
        return None, f"pyseccomp is not installed ({exc})"
    except OSError as exc:  # the package is there, libseccomp.so.2 is not
        return None, f"libseccomp is not available ({exc})"
    try:
        program = seccomp.SyscallFilter(seccomp.ERRNO(errno.EPERM))
        for name in ALLOWED_SYSCALLS + (WORKER_SYSCALLS if worker else ()):
            try:
                program.add_rule(seccomp.ALLOW, name)
            except (ValueError, OSError):
                continue  # not a system call on this architecture
        for name in SELF_ONLY_SYSCALLS:
            program.add_rule(seccomp.ALLOW, name, seccomp.Arg(0, seccomp.EQ, 0))
        if worker:
            program.add_rule(seccomp.ALLOW, "socketpair", seccomp.Arg(0, seccomp.EQ, _AF_UNIX))
            program.add_rule(seccomp.ALLOW, "ioctl", seccomp.Arg(1, seccomp.EQ, _FIONBIO))
        read_end, write_end = os.pipe()
        try:
            with os.fdopen(write_end, "wb") as sink:
                program.export_bpf(sink)
            chunks = []
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
        finally:
            os.close(read_end)
        return b"".join(chunks), ""
    except Exception as exc:  # any libseccomp failure leaves the layer off, reported
        return None, f"building the seccomp filter failed: {exc}"


# -- zygote side -------------------------------------------------------------------------------


def unshare_network() -> tuple[bool, str]:
    """Move this process into a new network namespace (a new user namespace first if not root).

    Returns ``(True, "")`` or ``(False, why not)``.
    """
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    if _c().unshare(flags) == 0:
        return True, ""
    code = ctypes.get_errno()
    return False, f"unshare(CLONE_NEWNET) failed: {os.strerror(code)}"


# -- child side (after fork, before the job) ---------------------------------------------------


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when the zygote dies."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the zygote died before the request took effect
        os._exit(0)


def drop_privileges() -> bool:
    """As root, become ``nobody`` with no groups and no capabilities; returns whether it did."""
    if os.geteuid() != 0:
        return False
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    return True


def lock_down() -> None:
    """No privilege gain through exec, no core dumps, no ptrace by same-uid processes."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_DUMPABLE, 0)


def address_space_bytes() -> int:
    """Virtual memory size of this process now (the baseline ``RLIMIT_AS`` is added to)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def apply_rlimits(*, memory_bytes: int, cpu_seconds: int | None, nofile: int) -> None:
    """Hard limits for the run: address space, CPU, no files written, no processes, no cores.

    ``cpu_seconds=None`` leaves CPU time unlimited (a long-lived worker, whose budget per call
    is enforced by the host killing it).
    """
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if cpu_seconds is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    for limit in ("RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_CORE", "RLIMIT_MEMLOCK",
                  "RLIMIT_MSGQUEUE"):
        if hasattr(resource, limit):
            resource.setrlimit(getattr(resource, limit), (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))


def start_wall_clock(seconds: float) -> None:
    """SIGALRM after ``seconds`` of wall-clock time (its default action, set by the child
    before the filter is loaded, terminates the process)."""
    signal.setitimer(signal.ITIMER_REAL, seconds)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp(program: bytes) -> None:
    """Install the BPF ``program`` (needs ``lock_down()`` first); raises ``OSError``."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    if _c().prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"loading the seccomp filter failed: {os.strerror(code)}")
