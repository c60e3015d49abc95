"""Run a parser in a forked child process with a time limit and a memory limit.

pymatgen's and ASE's readers have inputs on which they run for minutes or allocate
gigabytes (quadratic tokenising, symmetry expansion, huge allocations), and neither a
thread nor a signal can stop C code inside the calling process. A forked child can be
killed: :func:`run_bounded` forks, caps the child's address space with
``resource.setrlimit(RLIMIT_AS)`` and its CPU time with ``RLIMIT_CPU``, sends the result
back through a pipe, and kills the child when the wall-clock limit passes.

A fork costs about 25 ms in a process that has pymatgen and torch loaded, 20 times a small
CIF's parse, so :mod:`sen.io` uses this only for files its pre-scan calls risky.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import time
from collections.abc import Callable
from typing import Any

from sen.errors import StructureError

#: Extra address space (bytes) a child may map beyond what it inherits from its parent.
DEFAULT_MEMORY_LIMIT = 1536 * 1024**2
_HEADER = struct.Struct("<Q")


def fork_available() -> bool:
    """True where :func:`run_bounded` can isolate the work (POSIX with ``resource``)."""
    try:
        import resource  # noqa: F401
    except ImportError:  # pragma: no cover - Windows
        return False
    return hasattr(os, "fork")


def _address_space_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return 0


def _child(func: Callable[..., Any], args: tuple, write_fd: int, time_limit: float, memory_limit: int) -> None:
    """Body of the forked child: never returns (always ``os._exit``)."""
    code = 0
    try:
        import resource

        limit = _address_space_bytes() + memory_limit
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        cpu = int(time_limit) + 2
        _, hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)
        if hard_cpu == resource.RLIM_INFINITY or cpu <= hard_cpu:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, hard_cpu))
        try:
            payload = ("ok", func(*args))
        except StructureError as exc:
            payload = ("error", str(exc))
        except MemoryError:
            payload = ("memory", "")
        except RecursionError:
            payload = ("recursion", "")
        except Exception as exc:  # turned into a StructureError by the caller, in the user's terms
            payload = ("exception", type(exc).__name__)
        try:
            data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            data = pickle.dumps(("exception", "PicklingError"))
        data = _HEADER.pack(len(data)) + data
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view) :]
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def run_bounded(
    func: Callable[..., Any],
    args: tuple = (),
    *,
    time_limit: float,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    what: str = "this file",
) -> Any:
    """Call ``func(*args)`` in a forked child and return its result.

    Args:
        func: a picklable-result function; it may raise StructureError.
        args: its arguments (inherited by the child, not pickled).
        time_limit: seconds of wall-clock time before the child is killed.
        memory_limit: bytes of address space the child may add to what it inherits.
        what: how to name the input in error messages.

    Raises:
        StructureError: the child's own StructureError, or one saying that reading took
            too long, needed too much memory, or crashed.
        ReaderFailed: the child raised another exception (named in the exception).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        _child(func, args, write_fd, time_limit, memory_limit)
    os.close(write_fd)
    data, status, timed_out, expected = _collect(read_fd, pid, time.monotonic() + time_limit)
    if timed_out:
        raise StructureError(
            f"reading {what} took longer than {time_limit:g} s, so it was stopped; "
            "upload a single, ordered unit cell of at most a few hundred atoms"
        )
    if expected is None or len(data) < expected + _HEADER.size:
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
            raise StructureError(f"reading {what} used too much CPU time, so it was stopped")
        raise StructureError(
            f"reading {what} needed too much memory or crashed the reader, so it was stopped; "
            "check that it is a single unit cell"
        )
    kind, value = pickle.loads(data[_HEADER.size : _HEADER.size + expected])  # our own child's answer
    if kind == "ok":
        return value
    if kind == "error":
        raise StructureError(value)
    if kind == "memory":
        raise StructureError(f"reading {what} needed too much memory, so it was stopped; check that it is a single unit cell")
    if kind == "recursion":
        raise StructureError(f"{what} is nested too deeply to read")
    raise ReaderFailed(value)


def _collect(read_fd: int, pid: int, deadline: float) -> tuple[bytes, int, bool, int | None]:
    """Read the child's answer until it is complete, the child dies or ``deadline`` passes (then kill it).
    Returns (bytes read, the child's wait status, whether it timed out, the answer's announced size)."""
    chunks: list[bytes] = []
    size = 0
    expected: int | None = None
    timed_out = False
    try:
        while expected is None or size < expected + _HEADER.size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_fd], [], [], min(remaining, 0.05))
            if not ready:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):  # the child died without answering
                    pid = 0
                    break
                continue
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if expected is None and size >= _HEADER.size:
                expected = _HEADER.unpack(b"".join(chunks)[: _HEADER.size])[0]
    finally:
        os.close(read_fd)
        status = 0
        if pid:
            if timed_out:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # pragma: no cover - it just finished
                    pass
            _, status = os.waitpid(pid, 0)
    return b"".join(chunks), status, timed_out, expected


class ReaderFailed(Exception):  # noqa: N818 - not an error of ours: the parser's own exception, by name
    """The parser raised an exception other than StructureError in the child; ``args[0]`` is its type's name.

    :mod:`sen.io` words it for the user in terms of the file's format.
    """
