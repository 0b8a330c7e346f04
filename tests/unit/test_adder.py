"""The engines' adding thread (daemon/restore/sinks/adding.py): adds run in the order given,
at most ``pending`` held at once, and an add's error reaches the restore's thread."""

from __future__ import annotations

import threading
import time

import pytest

from daemon.restore.sinks.adding import Adder


def test_adds_run_in_order_on_one_thread_not_the_callers() -> None:
    adder = Adder("test-add", pending=3)
    seen: list[tuple[int, str]] = []

    def add(n: int) -> None:
        time.sleep(0.001 * (n % 3))  # uneven adds keep their order
        seen.append((n, threading.current_thread().name))

    for n in range(50):
        adder.submit(add, n)
    adder.drain()
    assert [n for n, _ in seen] == list(range(50))
    names = {name for _, name in seen}
    assert len(names) == 1 and names.pop().startswith("test-add")
    adder.close()


def test_at_most_pending_adds_are_held() -> None:
    adder = Adder("test-add", pending=2)
    release = threading.Event()
    started = threading.Semaphore(0)

    def add() -> None:
        started.release()
        release.wait(10)

    adder.submit(add)
    adder.submit(add)
    assert started.acquire(timeout=5)  # the first add runs, the second waits behind it
    third = threading.Thread(target=adder.submit, args=(add,))
    third.start()
    third.join(0.2)
    assert third.is_alive(), "a third add was taken while two were held"
    release.set()
    third.join(5)
    assert not third.is_alive()
    adder.drain()
    adder.close()


def test_an_adds_error_comes_out_of_the_next_submit_or_drain() -> None:
    adder = Adder("test-add", pending=1)

    def fail() -> None:
        raise RuntimeError("the engine refused the batch")

    done: list[int] = []
    adder.submit(fail)
    with pytest.raises(RuntimeError, match="refused the batch"):
        adder.submit(done.append, 1)  # waits for the failed add first
    assert done == []
    adder.submit(fail)
    with pytest.raises(RuntimeError, match="refused the batch"):
        adder.drain()
    adder.drain()  # nothing left
    adder.close()


def test_close_waits_for_adds_in_flight_and_drops_their_errors() -> None:
    adder = Adder("test-add", pending=4)
    done: list[int] = []

    def slow(n: int) -> None:
        time.sleep(0.05)
        done.append(n)

    adder.submit(slow, 1)
    adder.submit(lambda: 1 / 0)
    adder.submit(slow, 2)
    adder.close()
    assert done == [1, 2]
    adder.close()  # twice is fine


def test_pending_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        Adder("test-add", pending=0)
