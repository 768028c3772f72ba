"""The read floor: when a read is full, and what bounds the reads in between."""

from __future__ import annotations

from nexus_ingest.worker.floor import ReadFloor


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_full_reads_answer_bounds_reads_once_it_is_a_second_old() -> None:
    """The first read is full, then one a second; between them the bound is the newest full
    read's answer that is at least a second old."""
    clock = Clock()
    floor = ReadFloor(clock=clock)
    assert floor.next_after() == 0
    floor.learn(0, 501)
    clock.now += 0.6
    assert floor.next_after() == 0  # the answer is 0.6 s old: not yet
    clock.now += 0.5
    assert floor.next_after() == 0  # a full read is due
    floor.learn(0, 900)
    clock.now += 0.2
    assert floor.next_after() == 500  # the first answer (1.3 s old), not the second (0.2 s)
    clock.now += 0.9
    assert floor.next_after() == 0  # full again
    clock.now += 0.1
    assert floor.next_after() == 899


def test_bounded_reads_and_empty_reads_teach_nothing() -> None:
    clock = Clock()
    floor = ReadFloor(clock=clock)
    assert floor.next_after() == 0
    floor.learn(0, 40)
    clock.now += 1.0
    assert floor.next_after() == 0
    floor.learn(0, None)  # nothing was ready: the floor stays where it was
    clock.now += 0.5
    assert floor.next_after() == 39
    floor.learn(39, 7000)  # a bounded read's answer says nothing of what lies below its bound
    clock.now += 0.6
    assert floor.next_after() == 0
    clock.now += 0.5
    assert floor.next_after() == 39


def test_the_floor_goes_down_when_a_full_read_finds_an_older_message_ready() -> None:
    clock = Clock()
    floor = ReadFloor(clock=clock)
    floor.next_after()
    floor.learn(0, 900)
    clock.now += 1.0
    floor.next_after()
    floor.learn(0, 300)  # a retried message below the floor became visible again
    clock.now += 0.5
    assert floor.next_after() == 899
    clock.now += 0.5
    assert floor.next_after() == 0
    clock.now += 0.1
    assert floor.next_after() == 299
