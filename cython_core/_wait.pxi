# Shared by the compiled twins (included, not imported): the monotonic clock and a
# GIL-free, signal-aware wait on a CPython lock. CPython's PyThread locks are portable
# (POSIX and Windows) C-level locks that never touch the GIL.

from cpython.time cimport PyTime_MonotonicRaw, PyTime_AsSecondsDouble
from cpython.pythread cimport (
    PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
    PyThread_acquire_lock, PyThread_release_lock, PyLockStatus,
    PY_LOCK_ACQUIRED, PY_LOCK_INTR, NOWAIT_LOCK, WAIT_LOCK,
)
from cpython.exc cimport PyErr_CheckSignals

cdef extern from "pythread.h":
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock, long long microseconds,
                                             int intr_flag) nogil


cdef inline double _now() noexcept nogil:
    """Seconds on the same clock as ``time.monotonic()``."""
    return PyTime_AsSecondsDouble(PyTime_MonotonicRaw())


cdef int _lock_wait(PyThread_type_lock lock, double timeout) except -1:
    """Acquire ``lock``, waiting at most ``timeout`` seconds (< 0: forever) without the GIL.

    Returns 1 if acquired, 0 on timeout. Signals are handled between slices, so Ctrl-C
    interrupts a blocked thread; an exception from a signal handler propagates.
    """
    cdef double deadline = _now() + timeout if timeout >= 0 else -1.0
    cdef double remaining
    cdef long long micros
    cdef PyLockStatus r
    while True:
        if deadline < 0:
            micros = -1
        else:
            remaining = deadline - _now()
            if remaining <= 0:
                with nogil:
                    r = PyThread_acquire_lock_timed(lock, 0, 0)
                return 1 if r == PY_LOCK_ACQUIRED else 0
            micros = <long long>(remaining * 1e6)
            if micros < 1:
                micros = 1
        with nogil:
            r = PyThread_acquire_lock_timed(lock, micros, 1)
        if r == PY_LOCK_ACQUIRED:
            return 1
        if r == PY_LOCK_INTR:
            PyErr_CheckSignals()
            continue
        return 0


cdef PyThread_type_lock _SLEEP_LOCK = NULL


cdef int _sleep(double seconds) except -1:
    """Sleep without the GIL (waits on a lock that is never released)."""
    global _SLEEP_LOCK
    if seconds <= 0:
        with nogil:  # just let other threads run
            pass
        return 0
    if _SLEEP_LOCK == NULL:
        _SLEEP_LOCK = PyThread_allocate_lock()
        if _SLEEP_LOCK == NULL:
            raise MemoryError()
        PyThread_acquire_lock(_SLEEP_LOCK, WAIT_LOCK)
    _lock_wait(_SLEEP_LOCK, seconds)
    return 0
