"""The node's heap, measured honestly: live peak, smallest largest free block, MemoryErrors.

- Live heap: `gc.mem_alloc()` right after a `gc.collect()`, i.e. what is really held.
  Sampled at the moments the heap is known to peak, while the big objects are still
  alive: from the record sink (`sink()`) right after a save's JSON record is built
  ("saving"), after each event is stamped and written ("event"), after the restore at
  boot ("restored"); and on the first supervisor pass after boot and every
  `sample_every` passes after it (`tick()`; 10 s at a 1 s tick). In the 24 h day the
  peak always came from a "saving" sample, also when every pass sampled.
- Largest free block: MicroPython has no API for it, so `largest_free()` asks the
  allocator, after a collect: a bounded binary search with `bytearray(n)` under
  try/except MemoryError, with automatic collection off so a failed try costs no
  collect, and a collect after each success to free it again. About 8 tries to
  `tol_bytes` resolution. Run every `probe_every` samples and at "saving"/"restored".
  On ESP32 (MICROPY_GC_SPLIT_HEAP_AUTO) a failed try can grow the heap from the IDF
  heap like any real allocation of that size would: `cap_bytes` bounds the request.
- MemoryErrors: `caught(exc)` counts them where the application catches exceptions.
"""

import gc


class HeapMonitor:
    # (options by keyword; not keyword-only: the defaults then take a tuple, not a dict)
    def __init__(self, sample_every=10, probe_every=6, cap_bytes=None, tol_bytes=256):
        self.peak_bytes = 0  # largest live heap seen after a collect
        self.peak_at = None  # the sample point that saw it
        self.min_largest_free_bytes = None  # smallest largest free block seen
        self.memory_errors = 0
        self.samples = 0
        self.probes = 0
        self.changed = False  # something new to report (the supervisor emits it)
        self._sample_every = sample_every
        self._probe_every = probe_every
        self._passes = sample_every - 1  # the first pass samples: the heap after boot
        self._cap = cap_bytes
        self._tol = tol_bytes

    def sample(self, where):
        gc.collect()
        used = gc.mem_alloc()
        self.samples += 1
        if used > self.peak_bytes:
            self.peak_bytes = used
            self.peak_at = where
            self.changed = True
        return used

    def largest_free(self):
        """The largest block the allocator can hand out now (within tol_bytes, at most
        cap_bytes), after a collect."""
        gc.collect()
        hi = gc.mem_free() + 1  # never satisfiable: more than all that is free
        if self._cap is not None and hi > self._cap + 1:
            hi = self._cap + 1
        lo = 0
        n = hi - self._tol  # a tidy heap has one big free tail: often right first time
        was_on = gc.isenabled()
        gc.disable()  # a failed try must not collect (the search would cost far more)
        try:
            while hi - lo > self._tol:
                try:
                    buf = bytearray(n)
                    del buf
                    lo = n
                    gc.collect()  # give the block back before the next try
                except MemoryError:
                    hi = n
                n = (lo + hi) // 2
        finally:
            if was_on:
                gc.enable()
        gc.collect()  # a failed try leaves its small array header behind
        self.probes += 1
        m = self.min_largest_free_bytes
        if m is None or lo < m:
            self.min_largest_free_bytes = lo
            self.changed = True
        return lo

    def tick(self):
        """One supervisor pass: a live sample every sample_every passes (the first pass
        after boot included), a probe every probe_every samples."""
        self._passes += 1
        if self._passes % self._sample_every:
            return
        self.sample("pass")
        if self._passes >= self._sample_every * self._probe_every:
            self._passes = 0
            self.largest_free()

    def sink(self, kind, record):
        """A record sink (Gateway.add_sink): samples while a peak's objects are alive."""
        if kind in ("saving", "event", "restored"):
            self.sample(kind)
            if kind != "event":
                self.largest_free()
            elif record.get("kind") == "crash" and "MemoryError" in record.get("error", ""):
                self.memory_errors += 1  # a task died of it (heatgw.app _crash)
                self.changed = True

    def caught(self, exc):
        """Count exc if it is a MemoryError; returns exc (use in an except clause)."""
        if isinstance(exc, MemoryError):
            self.memory_errors += 1
            self.changed = True
        return exc

    def record(self):
        self.changed = False
        return {"peak_heap_bytes": self.peak_bytes, "peak_at": self.peak_at,
                "min_largest_free_bytes": self.min_largest_free_bytes,
                "memory_errors": self.memory_errors, "heap_samples": self.samples,
                "heap_total_bytes": gc.mem_alloc() + gc.mem_free()}
