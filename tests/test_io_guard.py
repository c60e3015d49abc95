"""sen.io_guard: work in a forked child with a wall-clock, CPU and memory limit, stoppable by the caller."""

from __future__ import annotations

import os
import time

import pytest

from sen.errors import StructureError
from sen.io_guard import ReaderFailed, WorkerLimit, fork_available, run_isolated

pytestmark = pytest.mark.skipif(not fork_available(), reason="needs fork and resource (POSIX)")


def _sleep_forever():
    while True:
        time.sleep(1)


def _refuse():
    raise StructureError("the file says no")


def _child_pid():
    return os.getpid()


def test_result_comes_back_from_another_process():
    assert run_isolated(sum, ([1, 2, 3],), time_limit=5) == 6
    assert run_isolated(_child_pid, time_limit=5) != os.getpid()


def test_each_limit_is_named():
    with pytest.raises(WorkerLimit) as limit:
        run_isolated(_sleep_forever, time_limit=0.3)
    assert limit.value.kind == "time"
    with pytest.raises(WorkerLimit) as limit:
        run_isolated(bytearray, (8 * 1024**3,), time_limit=5, memory_limit=256 * 1024**2)
    assert limit.value.kind == "memory"
    with pytest.raises(StructureError, match="the file says no"):
        run_isolated(_refuse, time_limit=5)
    with pytest.raises(ReaderFailed, match="ValueError"):
        run_isolated(int, ("not a number",), time_limit=5)


def test_should_stop_kills_the_child_within_a_poll():
    asked = time.monotonic() + 0.4
    t = time.perf_counter()
    with pytest.raises(WorkerLimit) as limit:
        run_isolated(_sleep_forever, time_limit=30, should_stop=lambda: time.monotonic() > asked)
    assert limit.value.kind == "stopped"
    assert time.perf_counter() - t < 2.0  # not the 30 s time limit


def test_children_forked_from_many_threads_at_once_all_answer():
    """Each thread's child inherits the other threads' pipes; a child that has ended is read to the end
    (its answer can arrive between the poll and the check that it has ended)."""
    import threading

    results, errors = [], []

    def call(i):
        for k in range(5):
            try:
                results.append(run_isolated(sum, ([i, k],), time_limit=20))
            except Exception as exc:  # collected: the assertion below names it
                errors.append(repr(exc))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and sorted(results) == sorted(i + k for i in range(8) for k in range(5))
