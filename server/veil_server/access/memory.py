"""Memory a flood of large requests leaves behind, and how the node gives it back.

Threat: many concurrent 15 MiB request bodies (allowed up to ``[limits] max_message_bytes``)
took a node from 275 MB to 1.15 GB RSS, and it stayed there. Two causes: bodies were read
before the caller was authenticated (handled in :mod:`.auth`), and glibc's allocator raises its
mmap threshold after the first large buffer is freed, so later 15 MiB buffers come from the heap
arenas of gRPC's threads and are kept there after use. :func:`return_large_buffers` pins the
threshold (which also turns off that adjustment): every buffer above it is its own mapping,
returned to the system when freed. A body also arrives as thousands of small transport slices,
spread over the arenas of many threads; once freed they leave the arenas fragmented, so after
large bodies (:func:`large_body_seen`) a background thread asks glibc to hand free pages back
(``malloc_trim``), at most twice a second and only after such traffic.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

log = logging.getLogger("veil.memory")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024
LARGE_BODY = 1024 * 1024  # a request at least this large schedules a trim
TRIM_EVERY_S = 0.5

_seen = threading.Event()
_trimmer: threading.Thread | None = None
_guard = threading.Lock()


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def large_body_seen() -> None:
    """Called when a large request body was read (or refused after gRPC buffered part of it)."""
    _seen.set()


TRIMS_AFTER = 20  # periods (10 s) of trimming after the last large body: gRPC frees connection buffers late


IDLE_TRIM_S = 5.0  # and a slow trim while idle: buffers a connection frees long after its calls


def _trim_loop(trim) -> None:
    pause = threading.Event()
    while True:
        if not _seen.wait(IDLE_TRIM_S):
            trim(0)  # about a millisecond when there is nothing to give back
            continue
        left = TRIMS_AFTER
        while left:
            if _seen.is_set():
                _seen.clear()
                left = TRIMS_AFTER
            trim(0)
            left -= 1
            pause.wait(TRIM_EVERY_S)  # rate limit: one trim per period whatever the traffic


def return_large_buffers() -> bool:
    """Pin glibc's mmap threshold and start the trimmer; ``False`` where there is no glibc."""
    global _trimmer
    libc = _libc()
    try:
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except AttributeError:
        return False
    with _guard:
        if _trimmer is None:
            trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
            _trimmer = threading.Thread(target=_trim_loop, args=(trim,), name="veil-trim", daemon=True)
            _trimmer.start()
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD) == 1
    if not ok:
        log.warning("could not pin the allocator's mmap threshold; large request buffers may stay resident")
    return ok
