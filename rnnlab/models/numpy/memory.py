"""Aligned arrays from a pool of reusable buffers.

Two things make the recurrent loops slow that have nothing to do with arithmetic:

* Alignment. NumPy aligns its allocations to 16 or 32 bytes; the AVX-512 kernels of OpenBLAS and of NumPy's
  ufuncs run markedly faster on 64-byte aligned operands (a [64, 256] float32 multiply in about half the time,
  the per-step GEMM about 10% faster). Every array here starts on a 64-byte boundary.
* Page faults. A forward/backward pass allocates tens of megabytes of caches. Freshly mapped memory faults on
  first touch (thousands of faults per pass, which can cost as much as the forward pass itself), and the C
  allocator hands large blocks back to the system on free. So large buffers are pooled: a buffer is handed out
  again once no array refers to it any more (its reference count says so), and never returned to the system
  while the pool stays under ``POOL_LIMIT_BYTES``.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

ALIGNMENT = 64  # bytes: one cache line, one AVX-512 register
POOLED_MIN_BYTES = 1 << 20  # smaller arrays come from the C allocator's heap, which does not fault
POOL_LIMIT_BYTES = 2 << 30  # idle buffers beyond this are released (least recently used first)

_lock = threading.Lock()
_pool: OrderedDict[int, np.ndarray] = OrderedDict()  # id -> raw uint8 buffer, least recently used first
_pool_bytes = 0


def _size_class(nbytes: int) -> int:
    """Round up to 1, 1.25, 1.5 or 1.75 times a power of two, so that similar sizes share buffers."""
    top = 1 << (nbytes - 1).bit_length()
    for fraction in (5, 6, 7, 8):
        size = top // 8 * fraction
        if size >= nbytes:
            return size
    return top


def _refcount(raw: np.ndarray) -> int:
    return sys.getrefcount(raw)


def _calibrate() -> int:
    """The reference count a pooled buffer shows in the pool's own loop when no array refers to it (measured,
    not assumed: it depends on the interpreter)."""
    probe = {0: np.empty(1, dtype=np.uint8)}
    for _, raw in probe.items():
        return _refcount(raw)
    raise AssertionError


_IDLE_REFCOUNT = _calibrate()


def _raw_buffer(nbytes: int) -> np.ndarray:
    """A uint8 buffer of at least ``nbytes + ALIGNMENT`` bytes that nothing else refers to."""
    global _pool_bytes
    if nbytes < POOLED_MIN_BYTES:
        return np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    size = _size_class(nbytes + ALIGNMENT)
    with _lock:
        for key, raw in _pool.items():
            if raw.nbytes == size and _refcount(raw) == _IDLE_REFCOUNT:
                _pool.move_to_end(key)
                return raw
        raw = np.empty(size, dtype=np.uint8)
        _pool[id(raw)] = raw
        _pool_bytes += size
        if _pool_bytes > POOL_LIMIT_BYTES:
            idle = []
            for key, old in _pool.items():
                if old is not raw and _refcount(old) == _IDLE_REFCOUNT:
                    idle.append(key)
            for key in idle:
                if _pool_bytes <= POOL_LIMIT_BYTES:
                    break
                _pool_bytes -= _pool.pop(key).nbytes
        return raw


def empty(shape: Any, dtype: Any) -> np.ndarray:
    """Like ``np.empty``: C-contiguous, first element on a 64-byte boundary, contents undefined."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = _raw_buffer(nbytes)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def zeros(shape: Any, dtype: Any) -> np.ndarray:
    out = empty(shape, dtype)
    out.fill(0)
    return out


def copy(a: Any, dtype: Any = None) -> np.ndarray:
    """An aligned, C-contiguous copy of ``a`` (cast to ``dtype`` if given)."""
    a = np.asarray(a)
    out = empty(a.shape, a.dtype if dtype is None else dtype)
    np.copyto(out, a, casting="unsafe")
    return out


def release_idle() -> int:
    """Drop every pooled buffer that no array refers to (the C allocator may then return it to the system);
    returns the bytes released. For measurements and long-lived processes that move on to other shapes."""
    global _pool_bytes
    with _lock:
        idle = [key for key, raw in _pool.items() if _refcount(raw) == _IDLE_REFCOUNT]
        released = sum(_pool.pop(key).nbytes for key in idle)
        _pool_bytes -= released
    return released
