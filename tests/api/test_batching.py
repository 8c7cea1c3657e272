"""The engine's one batcher, with operations' own merge/split pairs (no HTTP: the send is a
plain function whose futures the test settles by hand)."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from ipfs_accelerate_api.engine.batching import LIST, BatchKind, Batcher, split_sequence
from ipfs_accelerate_api.errors import ClientClosed, ResponseFormatError


class Sends:
    """A ``send`` that records each merged payload and returns a future the test settles."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, int]] = []
        self.futures: list[Future] = []
        self.cv = threading.Condition()

    def __call__(self, merged, priority) -> Future:
        fut: Future = Future()
        with self.cv:
            self.calls.append((merged, priority))
            self.futures.append(fut)
            self.cv.notify_all()
        return fut

    def wait(self, n: int) -> None:
        with self.cv:
            assert self.cv.wait_for(lambda: len(self.calls) >= n, 5), self.calls


def held(batcher: Batcher):
    """Pretend one request is in flight, so added calls wait for company."""
    assert batcher.begin_direct()
    return batcher.end_direct


def test_lists_are_concatenated_and_cut_back_in_order() -> None:
    send = Sends()
    b = Batcher(send, batch_size=10, batch_timeout=5, kind=LIST)
    release = held(b)
    futs = [b.add(["a"], 5), b.add(["b", "c"], 2), b.add(["d"], 9)]
    release()
    send.wait(1)
    assert send.calls == [(["a", "b", "c", "d"], 2)]  # the most urgent priority wins
    send.futures[0].set_result(["A", "B", "C", "D"])
    assert [f.result(5) for f in futs] == [["A"], ["B", "C"], ["D"]]
    b.close()


def test_a_kind_of_its_own_merges_and_splits() -> None:
    """Dict payloads with a row count (as KServe tensors): merge and split are the kind's."""
    kind = BatchKind(size=lambda p: p["n"],
                     merge=lambda parts: {"n": sum(p["n"] for p in parts),
                                          "ids": [i for p in parts for i in p["ids"]]},
                     split=lambda ans, sizes: [sum(x) for x in split_sequence(ans, sizes)])
    send = Sends()
    b = Batcher(send, batch_size=100, batch_timeout=5, kind=kind)
    release = held(b)
    futs = [b.add({"n": 2, "ids": [1, 2]}, 0), b.add({"n": 1, "ids": [3]}, 0)]
    release()
    send.wait(1)
    assert send.calls[0][0] == {"n": 3, "ids": [1, 2, 3]}
    send.futures[0].set_result([10, 20, 30])
    assert [f.result(5) for f in futs] == [30, 30]
    b.close()


def test_items_and_weight_both_bound_a_request() -> None:
    send = Sends()
    b = Batcher(send, batch_size=3, batch_timeout=5, max_weight=10)
    release = held(b)
    futs = [b.add(["a", "b"], 0, weight=6), b.add(["c"], 0, weight=6),  # weight: 12 > 10
            b.add(["d"], 0, weight=1), b.add(["e", "f"], 0, weight=1),   # items: 4 > 3
            b.add(["g"], 0, weight=50)]  # alone over the weight: still sent, alone
    release()
    send.wait(1)
    send.futures[0].set_result(list(send.calls[0][0]))
    send.wait(2)
    send.futures[1].set_result(list(send.calls[1][0]))
    send.wait(3)
    send.futures[2].set_result(list(send.calls[2][0]))
    send.wait(4)
    send.futures[3].set_result(list(send.calls[3][0]))
    assert [c[0] for c in send.calls] == [["a", "b"], ["c", "d"], ["e", "f"], ["g"]]
    assert [f.result(5) for f in futs] == [["a", "b"], ["c"], ["d"], ["e", "f"], ["g"]]
    b.close()


def test_a_split_that_does_not_fit_fails_every_caller() -> None:
    send = Sends()
    b = Batcher(send, batch_size=10, batch_timeout=5)
    release = held(b)
    futs = [b.add(["a"], 0), b.add(["b"], 0)]
    release()
    send.wait(1)
    send.futures[0].set_result(["only one"])
    for f in futs:
        with pytest.raises(ResponseFormatError, match="expected 2 results, got 1"):
            f.result(5)
    b.close()


def test_a_kind_giving_the_wrong_number_of_parts_fails_every_caller() -> None:
    kind = BatchKind(size=len, merge=LIST.merge, split=lambda ans, sizes: [ans])
    send = Sends()
    b = Batcher(send, batch_size=10, batch_timeout=5, kind=kind)
    release = held(b)
    futs = [b.add(["a"], 0), b.add(["b"], 0)]
    release()
    send.wait(1)
    send.futures[0].set_result("x")
    for f in futs:
        with pytest.raises(ResponseFormatError, match="2 calls was split into 1"):
            f.result(5)
    b.close()


def test_a_failed_merge_or_send_reaches_every_caller() -> None:
    def merge(parts):
        raise ValueError("cannot merge")

    b = Batcher(Sends(), batch_size=10, batch_timeout=5,
                kind=BatchKind(size=len, merge=merge, split=split_sequence))
    release = held(b)
    futs = [b.add(["a"], 0), b.add(["b"], 0)]
    release()
    for f in futs:
        with pytest.raises(ValueError, match="cannot merge"):
            f.result(5)
    b.close()


def test_closed_batcher_refuses_new_calls() -> None:
    b = Batcher(Sends(), batch_size=10, batch_timeout=5)
    b.close()
    with pytest.raises(ClientClosed):
        b.add(["a"], 0).result(5)
