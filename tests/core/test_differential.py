"""Differential property tests: random operation sequences give the same results on both twins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ipfs_accelerate_api.core import Priority

from ..conftest import FakeClock, _c_available, _load

pytestmark = pytest.mark.skipif(not _c_available(), reason="compiled twins not built")

C = None
PY = None


def twins():
    global C, PY
    if C is None:
        from ..conftest import Impl

        C, PY = Impl("c", _load("_c")), Impl("py", _load("_pure"))
    return C, PY


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # the *type* of error must match too
        return ("err", type(exc).__name__)


queue_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 2), st.integers()),
        st.tuples(st.just("get")),
        st.tuples(st.just("many"), st.integers(1, 5)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops=queue_ops, maxsize=st.integers(0, 6),
       overflow=st.sampled_from(["block", "reject", "drop_lowest"]))
def test_queue_twins_agree(ops, maxsize, overflow) -> None:
    c, py = twins()
    dropped_c, dropped_py = [], []
    qc = c.PriorityQueue(maxsize, overflow, dropped_c.append)
    qp = py.PriorityQueue(maxsize, overflow, dropped_py.append)
    for op in ops:
        if op[0] == "put":
            rc = _outcome(lambda q: q.put(op[2], Priority(op[1]), False), qc)
            rp = _outcome(lambda q: q.put(op[2], Priority(op[1]), False), qp)
        elif op[0] == "get":
            rc, rp = _outcome(qc.get_nowait), _outcome(qp.get_nowait)
        else:
            rc, rp = _outcome(qc.get_many, op[1], 0), _outcome(qp.get_many, op[1], 0)
        assert rc == rp
    assert dropped_c == dropped_py
    assert qc.stats() == qp.stats()


bucket_ops = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0, 5)),
        st.tuples(st.just("try"), st.floats(0, 4)),
        st.tuples(st.just("refund"), st.floats(0, 3)),
        st.tuples(st.just("charge"), st.floats(0, 30)),
        st.tuples(st.just("sync"), st.floats(0, 5), st.floats(0, 10)),
        st.tuples(st.just("rate"), st.floats(0.1, 50)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=bucket_ops, rate=st.floats(0.1, 100), capacity=st.floats(4, 20))
def test_bucket_twins_agree(ops, rate, capacity) -> None:
    c, py = twins()
    clock = FakeClock()
    bc = c.TokenBucket(rate, capacity, clock=clock)
    bp = py.TokenBucket(rate, capacity, clock=clock)
    for op in ops:
        if op[0] == "advance":
            clock.advance(op[1])
            continue
        if op[0] == "try":
            rc, rp = _outcome(bc.try_acquire, op[1]), _outcome(bp.try_acquire, op[1])
        elif op[0] == "refund":
            rc, rp = _outcome(bc.refund, op[1]), _outcome(bp.refund, op[1])
        elif op[0] == "charge":
            rc, rp = _outcome(bc.charge, op[1]), _outcome(bp.charge, op[1])
        elif op[0] == "sync":
            rc, rp = _outcome(bc.sync, op[1], op[2]), _outcome(bp.sync, op[1], op[2])
        else:
            rc, rp = _outcome(bc.set_rate, op[1], capacity), _outcome(bp.set_rate, op[1], capacity)
        assert rc[0] == rp[0]
        if rc[0] == "ok" and isinstance(rc[1], float):
            assert rc[1] == pytest.approx(rp[1], rel=1e-9, abs=1e-9)
        assert bc.available() == pytest.approx(bp.available(), rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    costs=st.lists(st.tuples(st.floats(0, 3), st.floats(0, 30), st.floats(0, 2)), max_size=40),
)
def test_limiter_twins_agree(costs) -> None:
    c, py = twins()
    clock = FakeClock()
    lc = c.RateLimiter([c.TokenBucket(2, 3, clock=clock), c.TokenBucket(20, 30, clock=clock)])
    lp = py.RateLimiter([py.TokenBucket(2, 3, clock=clock), py.TokenBucket(20, 30, clock=clock)])
    for a, b, dt in costs:
        rc, rp = lc.try_acquire([a, b]), lp.try_acquire([a, b])
        assert rc == pytest.approx(rp, rel=1e-9, abs=1e-9)
        clock.advance(dt)
    assert [x.available() for x in lc.buckets] == pytest.approx([x.available() for x in lp.buckets])


breaker_ops = st.lists(
    st.sampled_from(["allow", "ok", "fail", "tick", "reset", "retry", "state"]), max_size=100
)


@settings(max_examples=200, deadline=None)
@given(ops=breaker_ops, threshold=st.integers(1, 4), probes=st.integers(1, 3),
       successes=st.integers(1, 3))
def test_breaker_twins_agree(ops, threshold, probes, successes) -> None:
    c, py = twins()
    clock = FakeClock()
    seen_c, seen_p = [], []
    bc = c.CircuitBreaker(threshold, 2.0, probes, successes, clock=clock)
    bp = py.CircuitBreaker(threshold, 2.0, probes, successes, clock=clock)
    bc.add_listener(lambda o, n: seen_c.append((o, n)))
    bp.add_listener(lambda o, n: seen_p.append((o, n)))
    for op in ops:
        if op == "tick":
            clock.advance(0.75)
            continue
        fn = {"allow": "allow", "ok": "record_success", "fail": "record_failure",
              "reset": "reset", "retry": "retry_after", "state": "state"}[op]
        rc = getattr(bc, fn)
        rp = getattr(bp, fn)
        if fn != "state":
            rc, rp = rc(), rp()
        assert rc == rp
        assert bc.stats() == bp.stats()
    assert seen_c == seen_p


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(0, 200), max_size=300), max_items=st.integers(1, 20),
       max_tokens=st.integers(1, 500))
def test_packer_twins_agree(lengths, max_items, max_tokens) -> None:
    c, py = twins()
    assert np.array_equal(c.pack_batches(lengths, max_items, max_tokens),
                          py.pack_batches(lengths, max_items, max_tokens))
    sc = c.pack_sorted(lengths, max_items, max_tokens)
    sp = py.pack_sorted(lengths, max_items, max_tokens)
    assert [x.tolist() for x in sc] == [x.tolist() for x in sp]


finite = st.floats(-100, 100, allow_nan=False, width=32)


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    dtype=st.sampled_from([np.float32, np.float64]),
    d=st.integers(1, 20),
    nq=st.integers(1, 8),
    nc=st.integers(1, 60),
)
def test_vecmath_twins_agree(data, dtype, d, nq, nc) -> None:
    c, py = twins()
    q = data.draw(hnp.arrays(dtype, (nq, d), elements=finite))
    corpus = data.draw(hnp.arrays(dtype, (nc, d), elements=finite))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
    assert np.allclose(c.l2_normalize(q), py.l2_normalize(q), **tol)
    assert np.allclose(c.cosine_similarity(q, corpus), py.cosine_similarity(q, corpus), **tol)
    k = data.draw(st.integers(1, nc))
    sc, ic = c.top_k(q, corpus, k)
    sp, ip = py.top_k(q, corpus, k)
    assert np.allclose(sc, sp, **tol)
    # Indices may differ only between (near-)equal scores: check each pick's true score.
    full = py.cosine_similarity(q, corpus)
    assert np.allclose(np.take_along_axis(full, ic, 1), sp, **tol)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32)
                       | st.floats(-1e30, 1e30, allow_nan=False)
                       | st.integers(-2**70, 2**70).map(float), max_size=50),
       spaces=st.sampled_from(["", " ", "\n "]))
def test_parse_floats_twins_agree(values, spaces) -> None:
    c, py = twins()
    text = ("," + spaces).join(repr(v) for v in values).encode()
    with np.errstate(over="ignore"):
        expected = np.array(values, dtype=np.float32)
    got_c, got_py = c.parse_floats(text), py.parse_floats(text)
    assert np.array_equal(got_py, expected)
    assert np.array_equal(got_c, expected)
