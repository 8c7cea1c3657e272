"""PriorityQueue behaviour, run against both twins."""

from __future__ import annotations

import queue as stdlib_queue
import threading

import pytest

from ipfs_accelerate_api.core import Priority, QueueClosed, QueueEmpty, QueueFull

H, N, L = Priority.HIGH, Priority.NORMAL, Priority.LOW


def test_higher_level_first_and_fifo_within(impl) -> None:
    q = impl.PriorityQueue()
    for i, p in enumerate([L, N, H, L, H, N]):
        q.put((p, i), p)
    got = [q.get_nowait() for _ in range(6)]
    assert got == [(H, 2), (H, 4), (N, 1), (N, 5), (L, 0), (L, 3)]
    assert q.empty() and q.qsize() == 0


def test_default_priority_is_normal(impl) -> None:
    q = impl.PriorityQueue()
    q.put("n")
    q.put("h", Priority.HIGH)
    q.put("l", Priority.LOW)
    assert [q.get(), q.get(), q.get()] == ["h", "n", "l"]


def test_errors_subclass_stdlib(impl) -> None:
    q = impl.PriorityQueue(maxsize=1, overflow="reject")
    with pytest.raises(stdlib_queue.Empty):
        q.get_nowait()
    q.put(1)
    with pytest.raises(stdlib_queue.Full):
        q.put(2)
    assert issubclass(QueueFull, stdlib_queue.Full)
    assert issubclass(QueueEmpty, stdlib_queue.Empty)


@pytest.mark.parametrize("bad", [-1, 3, 7])
def test_bad_priority(impl, bad) -> None:
    q = impl.PriorityQueue()
    with pytest.raises(ValueError, match="priority"):
        q.put("x", bad)
    assert q.qsize() == 0


def test_bad_arguments(impl) -> None:
    with pytest.raises(ValueError, match="overflow"):
        impl.PriorityQueue(overflow="spill")
    with pytest.raises(ValueError, match="maxsize"):
        impl.PriorityQueue(maxsize=-1)
    q = impl.PriorityQueue()
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="max_items"):
        q.get_many(0)


def test_reject_policy_counts(impl) -> None:
    q = impl.PriorityQueue(maxsize=2, overflow="reject")
    q.put(1)
    q.put(2)
    assert q.full()
    with pytest.raises(QueueFull):
        q.put(3, Priority.HIGH)
    s = q.stats()
    assert s["rejected"] == 1 and s["enqueued"] == 2 and s["size"] == 2


def test_block_policy_nonblocking_put_raises(impl) -> None:
    q = impl.PriorityQueue(maxsize=1)
    q.put(1)
    with pytest.raises(QueueFull):
        q.put_nowait(2)
    with pytest.raises(QueueFull):
        q.put(2, timeout=0.01)
    assert q.stats()["rejected"] == 2


def test_drop_lowest_evicts_oldest_of_lowest_level(impl) -> None:
    dropped = []
    q = impl.PriorityQueue(maxsize=3, overflow="drop_lowest", on_drop=dropped.append)
    q.put("n1", N)
    q.put("l1", L)
    q.put("l2", L)
    q.put("h1", H)  # evicts l1 (oldest LOW)
    q.put("n2", N)  # evicts l2
    assert dropped == ["l1", "l2"]
    with pytest.raises(QueueFull):
        q.put("n3", N)  # nothing lower than NORMAL left
    with pytest.raises(QueueFull):
        q.put("l3", L)
    q.put("h2", H)  # evicts n1 (oldest NORMAL)
    assert dropped == ["l1", "l2", "n1"]
    assert [q.get_nowait() for _ in range(3)] == ["h1", "h2", "n2"]
    s = q.stats()
    assert s["dropped"] == 3 and s["rejected"] == 2 and s["high_water"] == 3


def test_drop_lowest_without_callback_counts(impl) -> None:
    q = impl.PriorityQueue(maxsize=1, overflow="drop_lowest")
    q.put("low", L)
    q.put("high", H)
    assert q.get() == "high"
    assert q.stats()["dropped"] == 1


def test_stats_shape(impl) -> None:
    q = impl.PriorityQueue(maxsize=10)
    q.put(1, H)
    q.put(2, L)
    q.put(3, L)
    q.get()
    s = q.stats()
    assert s == {
        "depth": {"HIGH": 0, "NORMAL": 0, "LOW": 2},
        "size": 2,
        "maxsize": 10,
        "enqueued": 3,
        "dequeued": 1,
        "rejected": 0,
        "dropped": 0,
        "high_water": 3,
        "closed": False,
    }


def test_get_many(impl) -> None:
    q = impl.PriorityQueue()
    for i in range(5):
        q.put(i, L if i % 2 else H)
    assert q.get_many(3) == [0, 2, 4]
    assert q.get_many(10) == [1, 3]
    assert q.get_many(4, timeout=0) == []


def test_get_timeout_raises_empty(impl) -> None:
    q = impl.PriorityQueue()
    with pytest.raises(QueueEmpty):
        q.get(timeout=0.01)


def test_close_semantics(impl) -> None:
    q = impl.PriorityQueue()
    q.put(1)
    q.close()
    with pytest.raises(QueueClosed):
        q.put(2)
    assert q.get() == 1  # drains what is left
    with pytest.raises(QueueClosed):
        q.get()
    with pytest.raises(QueueClosed):
        q.get_many(5)
    assert q.stats()["closed"] is True


def test_close_wakes_every_waiter(impl) -> None:
    q = impl.PriorityQueue(maxsize=1)
    q.put("full")
    full_q = q
    empty_q = impl.PriorityQueue()
    outcomes: list[str] = []
    lock = threading.Lock()

    def getter() -> None:
        try:
            empty_q.get()
            r = "item"
        except QueueClosed:
            r = "closed"
        with lock:
            outcomes.append(r)

    def putter() -> None:
        try:
            full_q.put("more")
            r = "put"
        except QueueClosed:
            r = "closed"
        with lock:
            outcomes.append(r)

    threads = [threading.Thread(target=getter) for _ in range(5)]
    threads += [threading.Thread(target=putter) for _ in range(5)]
    for t in threads:
        t.start()
    # No sleeping to "let them block": close() must release them whenever they arrive.
    empty_q.close()
    full_q.close()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert outcomes.count("closed") == 10


def test_blocked_putter_proceeds_when_room_appears(impl) -> None:
    q = impl.PriorityQueue(maxsize=1)
    q.put(0)
    done = threading.Event()

    def putter() -> None:
        q.put(1)
        done.set()

    t = threading.Thread(target=putter)
    t.start()
    assert q.get(timeout=10) == 0
    assert q.get(timeout=10) == 1  # only arrives once the putter got its room
    t.join(10)
    assert done.is_set()


@pytest.mark.slow
def test_many_producers_and_consumers_lose_nothing(impl) -> None:
    producers, consumers, per_producer = 8, 8, 25_000  # 200,000 items
    q = impl.PriorityQueue(maxsize=1000)
    received: list[list[tuple[int, int]]] = [[] for _ in range(consumers)]
    barrier = threading.Barrier(producers + consumers)

    def produce(pid: int) -> None:
        barrier.wait()
        for i in range(per_producer):
            q.put((pid, i), Priority(i % 3))

    def consume(cid: int) -> None:
        barrier.wait()
        out = received[cid]
        try:
            while True:
                out.extend(q.get_many(64))
        except QueueClosed:
            pass

    ps = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    cs = [threading.Thread(target=consume, args=(c,)) for c in range(consumers)]
    for t in ps + cs:
        t.start()
    for t in ps:
        t.join(120)
        assert not t.is_alive()
    q.close()
    for t in cs:
        t.join(120)
        assert not t.is_alive()
    items = [x for chunk in received for x in chunk]
    assert len(items) == producers * per_producer
    assert len(set(items)) == len(items)
    # FIFO within a level for each producer, as seen by any one consumer.
    for chunk in received:
        last: dict[tuple[int, int], int] = {}
        for pid, i in chunk:
            key = (pid, i % 3)
            assert last.get(key, -1) < i
            last[key] = i
    s = q.stats()
    assert s["enqueued"] == s["dequeued"] == producers * per_producer
    assert s["high_water"] <= 1000


def test_no_reference_leak(impl) -> None:
    import gc
    import weakref

    class Item:
        pass

    q = impl.PriorityQueue()
    item = Item()
    ref = weakref.ref(item)
    q.put(item)
    assert q.get() is item
    del item
    gc.collect()
    assert ref() is None
    q2 = impl.PriorityQueue()
    held = Item()
    ref2 = weakref.ref(held)
    q2.put(held)
    del held, q2
    gc.collect()
    assert ref2() is None


def test_growth_keeps_order(impl) -> None:
    q = impl.PriorityQueue()
    # Interleave puts and gets so the ring wraps, then force several growths.
    for i in range(10):
        q.put(i)
    for i in range(5):
        assert q.get() == i
    for i in range(10, 200):
        q.put(i)
    assert [q.get() for _ in range(195)] == list(range(5, 200))
