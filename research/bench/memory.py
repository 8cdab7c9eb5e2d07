"""Peak memory while a block runs: CUDA's max_memory_allocated, else the process RSS sampled by a thread."""

from __future__ import annotations

import resource
import threading

import torch


class PeakMemory:
    """Peak memory (MiB) while the block runs: CUDA's max_memory_allocated, else the process RSS.

    RSS is sampled every 5 ms by a thread (psutil); without psutil it is the process high-water mark.
    Freed heap is first handed back to the OS (glibc ``malloc_trim``), so an earlier, larger run
    does not inflate a later one's RSS.

    Example:
        >>> with PeakMemory(torch.device("cpu")) as mem:
        ...     work()
        >>> mem.mb
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil comes with accelerate
            return self
        _trim_heap()
        proc = psutil.Process()
        self.mb = proc.memory_info().rss / 2**20

        def sample() -> None:
            while not self._stop.wait(0.005):
                self.mb = max(self.mb, proc.memory_info().rss / 2**20)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            import psutil

            self.mb = max(self.mb, psutil.Process().memory_info().rss / 2**20)
        else:  # pragma: no cover
            self.mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _trim_heap() -> None:
    """Return freed heap pages to the OS where glibc allows it (elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
