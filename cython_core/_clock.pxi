# The monotonic clock shared by the compiled twins (included, not imported): the same clock
# as ``time.monotonic()``, readable without the GIL.

from cpython.time cimport PyTime_MonotonicRaw, PyTime_AsSecondsDouble


cdef inline double _now() noexcept nogil:
    """Seconds on the same clock as ``time.monotonic()``."""
    return PyTime_AsSecondsDouble(PyTime_MonotonicRaw())
