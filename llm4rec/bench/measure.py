"""Timing and peak memory, fair between paths on a shared machine.

Paths are timed in interleaved repeats (ours, peer, ours, peer, ...), so a
slow spell of the machine hits both alike, and each path's rate is taken
from its best (shortest) time, which load from other processes can only lengthen. Peak memory is what a path adds on top of what
was allocated when it started (the model's weights are not counted):
on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the process's
resident set size, sampled every 5 ms by a thread (psutil), after
``malloc_trim`` has handed freed memory back to the system so the baseline is
honest. A CPU peak shorter than the sampling interval can be missed.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the baseline keeps what the allocator holds
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda max_memory_allocated above start"
    return "peak RSS above start (psutil, 5 ms sampling)"


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.megabytes``."""

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device, self.interval = device, interval
        self.megabytes = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        import psutil

        _malloc_trim()
        self._process = psutil.Process()
        self._start = self._peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, self._process.memory_info().rss)
        self.megabytes = max(peak - self._start, 0) / 2**20


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    peak_mb: float = 0.0
    extra: dict = field(default_factory=dict)  # what the run itself reports (e.g. tokens it processed)

    @property
    def best(self) -> float:
        """The shortest time: load from other processes only ever adds time, so the best run is the closest to
        the path's own cost (``timeit``'s reasoning)."""
        return min(self.seconds)


def run_measured(fn: Callable[[], object], device: torch.device, timing: Timing):
    """Run ``fn`` once; add its wall time (device work included) and peak memory to ``timing``; return its result."""
    with PeakMemory(device) as peak:
        synchronize(device)
        started = time.perf_counter()
        result = fn()
        synchronize(device)
        seconds = time.perf_counter() - started
    timing.seconds.append(seconds)
    timing.peak_mb = max(timing.peak_mb, peak.megabytes)
    return result


def interleaved(
    paths: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmups: dict[str, Callable[[], object]] | None = None,
) -> dict[str, Timing]:
    """Time every path ``repeats`` times, interleaved, after one untimed warm-up call of each (``warmups[name]``,
    e.g. the path on a few samples, or else the path itself): kernels chosen, caches and allocator filled."""
    for name, fn in paths.items():
        (warmups or {}).get(name, fn)()
    timings = {name: Timing() for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            run_measured(fn, device, timings[name])
    return timings


def interleaved_on(
    paths: dict[str, Callable[[list], object]], inputs: list, warmup_inputs: int, device: torch.device, repeats: int
) -> tuple[dict[str, Timing], dict[str, object]]:
    """Timings of ``paths`` (name -> function(inputs)) on ``inputs``, each warmed up on the first
    ``warmup_inputs``; also what each path returned from its last timed run."""
    outputs: dict[str, object] = {}

    def run(name: str, fn: Callable[[list], object]) -> Callable[[], None]:
        return lambda: outputs.__setitem__(name, fn(inputs))

    def warm(fn: Callable[[list], object]) -> Callable[[], object]:
        return lambda: fn(inputs[:warmup_inputs])

    runs = {name: run(name, fn) for name, fn in paths.items()}
    timings = interleaved(runs, device, repeats, {name: warm(fn) for name, fn in paths.items()})
    return timings, outputs
