"""What the benchmarks of :mod:`bench_performance` share: timing that waits
for the device, and the device and memory figures of the report."""

from __future__ import annotations

import math
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch

__all__ = ["device_name", "peak_rss_mib", "seconds_per_call", "synchronize"]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it
    measures that work (CUDA runs asynchronously; the CPU does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(
    fn: Callable[[], object], device: torch.device, repeats: int
) -> tuple[float, object]:
    """Median seconds of one call of ``fn`` over ``repeats`` samples (each
    sample runs ``fn`` enough times to last ~50 ms), and ``fn``'s result."""
    result = fn()  # warm-up
    synchronize(device)
    number = 1
    while True:
        elapsed = _time_calls(fn, number, device)
        if elapsed >= 0.05 or number >= 10_000:
            break
        number = min(10_000, max(2 * number, math.ceil(0.06 * number / elapsed)))
    samples = [elapsed / number]
    samples += [_time_calls(fn, number, device) / number for _ in range(repeats - 1)]
    return statistics.median(samples), result


def _time_calls(fn: Callable[[], object], number: int, device: torch.device) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    synchronize(device)
    return max(time.perf_counter() - start, 1e-9)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name where the system tells it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mib() -> float:
    """The process's peak resident set size (``ru_maxrss``: KiB on Linux,
    bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
