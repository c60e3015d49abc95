"""Run a parser in a forked child process with a time limit and a memory limit.

pymatgen's and ASE's readers have inputs on which they run for minutes or allocate
gigabytes (quadratic tokenising, symmetry expansion, huge allocations), and neither a
thread nor a signal can stop C code inside the calling process. A forked child can be
killed: :func:`run_bounded` forks, caps the child's address space with
``resource.setrlimit(RLIMIT_AS)`` and its CPU time with ``RLIMIT_CPU``, sends the result
back through a pipe, and kills the child when the wall-clock limit passes (or when the caller's
``should_stop`` says so). :func:`run_isolated` is the general form; :func:`run_bounded` words its
limits for a parser, and the app runs its predictions for a crystal through :func:`run_isolated`.

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
import traceback
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


def _child(
    func: Callable[..., Any], args: tuple, write_fd: int, time_limit: float, memory_limit: int, log_exceptions: bool
) -> None:
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
            # with log_exceptions the traceback comes back too, for the caller's log
            payload = ("exception", (type(exc).__name__, traceback.format_exc() if log_exceptions else ""))
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


class WorkerLimit(Exception):  # noqa: N818 - a limit, not an error of the caller
    """The isolated work was stopped: ``kind`` is ``"time"``, ``"cpu"``, ``"memory"`` (or a crash),
    ``"recursion"`` or ``"stopped"`` (``should_stop`` said so)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def run_isolated(
    func: Callable[..., Any],
    args: tuple = (),
    *,
    time_limit: float,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    should_stop: Callable[[], bool] | None = None,
    log_exceptions: bool = False,
) -> Any:
    """Call ``func(*args)`` in a forked child with a wall-clock, CPU-time and memory limit; return its result.

    Args:
        func: a function with a picklable result; it may raise StructureError (re-raised here).
        args: its arguments (inherited by the child, not pickled).
        time_limit: seconds of wall-clock time before the child is killed.
        memory_limit: bytes of address space the child may add to what it inherits.
        should_stop: polled every 50 ms while the child works; when it returns True the child is
            killed (e.g. the visitor who asked for the work has left).
        log_exceptions: send back the traceback of an unexpected exception in the child
            (``ReaderFailed.args[1]``), for the caller to log.

    Raises:
        StructureError: the child's own.
        WorkerLimit: a limit stopped the child, it crashed, or ``should_stop`` said so.
        ReaderFailed: the child raised another exception (its type's name in ``args[0]``, its
            traceback in ``args[1]`` with ``log_exceptions``).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        _child(func, args, write_fd, time_limit, memory_limit, log_exceptions)
    os.close(write_fd)
    data, status, ended, expected = _collect(read_fd, pid, time.monotonic() + time_limit, should_stop)
    if ended:
        raise WorkerLimit(ended)
    if expected is None or len(data) < expected + _HEADER.size:
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
            raise WorkerLimit("cpu")
        raise WorkerLimit("memory")
    kind, value = pickle.loads(data[_HEADER.size : _HEADER.size + expected])  # our own child's answer
    if kind == "ok":
        return value
    if kind == "error":
        raise StructureError(value)
    if kind in ("memory", "recursion"):
        raise WorkerLimit(kind)
    raise ReaderFailed(*value)


def run_bounded(
    func: Callable[..., Any],
    args: tuple = (),
    *,
    time_limit: float,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    what: str = "this file",
) -> Any:
    """:func:`run_isolated` for a parser: a limit becomes a StructureError that says what to upload instead.

    Raises:
        StructureError: the child's own StructureError, or one saying that reading took
            too long, needed too much memory, or crashed.
        ReaderFailed: the child raised another exception (named in the exception).
    """
    try:
        return run_isolated(func, args, time_limit=time_limit, memory_limit=memory_limit)
    except WorkerLimit as exc:
        if exc.kind == "time":
            raise StructureError(
                f"reading {what} took longer than {time_limit:g} s, so it was stopped; "
                "upload a single, ordered unit cell of at most a few hundred atoms"
            ) from None
        if exc.kind == "cpu":
            raise StructureError(f"reading {what} used too much CPU time, so it was stopped") from None
        if exc.kind == "recursion":
            raise StructureError(f"{what} is nested too deeply to read") from None
        raise StructureError(
            f"reading {what} needed too much memory or crashed the reader, so it was stopped; "
            "check that it is a single unit cell"
        ) from None


def _collect(
    read_fd: int, pid: int, deadline: float, should_stop: Callable[[], bool] | None = None
) -> tuple[bytes, int, str, int | None]:
    """Read the child's answer until it is complete, the child dies, ``deadline`` passes or ``should_stop``
    says so (then kill it). Returns (bytes read, the child's wait status, why it was killed: "time",
    "stopped" or "" when it was not, the answer's announced size)."""
    chunks: list[bytes] = []
    size = 0
    expected: int | None = None
    ended = ""
    status = 0

    def take(chunk: bytes) -> None:
        nonlocal size, expected
        chunks.append(chunk)
        size += len(chunk)
        if expected is None and size >= _HEADER.size:
            expected = _HEADER.unpack(b"".join(chunks)[: _HEADER.size])[0]

    try:
        while expected is None or size < expected + _HEADER.size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                ended = "time"
                break
            if should_stop is not None and should_stop():
                ended = "stopped"
                break
            ready, _, _ = select.select([read_fd], [], [], min(remaining, 0.05))
            if not ready:
                done, done_status = os.waitpid(pid, os.WNOHANG)
                if done:  # the child has ended; the end of its answer may have arrived since select()
                    pid, status = 0, done_status
                    while select.select([read_fd], [], [], 0)[0] and (chunk := os.read(read_fd, 1 << 20)):
                        take(chunk)
                    break
                continue
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                break
            take(chunk)
    finally:
        os.close(read_fd)
        if pid:
            if ended:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # pragma: no cover - it just finished
                    pass
            _, status = os.waitpid(pid, 0)
    return b"".join(chunks), status, ended, expected


class ReaderFailed(Exception):  # noqa: N818 - not an error of ours: the parser's own exception, by name
    """The parser raised an exception other than StructureError in the child; ``args[0]`` is its type's name.

    :mod:`sen.io` words it for the user in terms of the file's format.
    """
