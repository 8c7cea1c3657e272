# Shared by the compiled twins that wait (included, not imported): a GIL-free,
# signal-aware wait on a CPython lock. CPython's PyThread locks are portable
# (POSIX and Windows) C-level locks that never touch the GIL.

include "_clock.pxi"

from cpython.pythread cimport (
    PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
    PyThread_acquire_lock, PyThread_release_lock, PyLockStatus,
    PY_LOCK_ACQUIRED, PY_LOCK_INTR, NOWAIT_LOCK, WAIT_LOCK,
)
from cpython.exc cimport PyErr_CheckSignals

cdef extern from "pythread.h":
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock, long long microseconds,
                                             int intr_flag) nogil


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
