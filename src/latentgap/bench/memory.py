"""Peak memory of one step, measured the same way on every device (timm ``benchmark.py`` reports
``torch.cuda.max_memory_allocated``; this module adds an equivalent for CPU).

Definition used everywhere (``peak_tensor_bytes``)::

    peak = resident + max over the step of (bytes allocated since the step began)

* ``resident`` — bytes of the tensors the step owns before it starts: weights, buffers, gradients,
  optimiser state and the input batch (unique storages, counted from the tensors themselves).
* the in-step peak — on CUDA ``max_memory_allocated() - memory_allocated()`` after
  ``reset_peak_memory_stats`` (the caching allocator's own counters); on CPU the allocator events that
  ``torch.profiler`` records with ``profile_memory=True``: every ``c10`` CPU allocation and free is
  reported with its signed byte count and a timestamp, so the running sum in time order is the live
  tensor bytes and its maximum is the peak. This is what ``max_memory_allocated`` is on a GPU.

Memory that is not a torch tensor (oneDNN scratch space, the Python heap, glibc arenas) is not in
that figure; :class:`RssWatcher` measures it as the growth of the process's resident set size while
the step runs (sampled by a thread), after returning freed heap pages to the OS (``malloc_trim``) so
that pages freed by an earlier step do not hide this one's growth.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Callable, Iterable

import torch

from ..device import synchronize

# libkineto prints "profiler_start/stop" banners to stderr on every profile(); export KINETO_LOG_LEVEL=5
# before starting Python to silence them (setting it from here is too late: torch reads it at import).


def tensor_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and repeats counted once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        st = t.untyped_storage()
        key = (t.device.type, st.data_ptr())
        if key in seen:
            continue
        seen.add(key)
        total += st.nbytes()
    return total


def module_state_tensors(*modules: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None):
    """Weights, buffers, gradients and optimiser state of ``modules`` (what a step keeps resident)."""
    for m in modules:
        for p in m.parameters():
            yield p
            yield p.grad
        yield from m.buffers()
    if optimizer is not None:
        for st in optimizer.state.values():
            yield from (v for v in st.values() if isinstance(v, torch.Tensor))


def peak_from_events(events: Iterable[tuple[int, int]]) -> int:
    """Largest running sum of signed allocation sizes ``(timestamp_ns, nbytes)`` taken in time order
    (frees before allocations at equal timestamps, so a same-instant swap is not double counted)."""
    live = peak = 0
    for _, nbytes in sorted(events, key=lambda e: (e[0], e[1])):
        live += nbytes
        peak = max(peak, live)
    return peak


def cpu_step_peak_bytes(step: Callable[[], object]) -> int:
    """Peak of tensor bytes allocated (and not yet freed) while ``step()`` runs on CPU."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # kineto's raw results keep each allocator event with its signed size and device; the
    # FunctionEvent view drops allocations that are attributed to no operator.
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    return peak_from_events(events)


def cuda_step_peak_bytes(step: Callable[[], object], device: torch.device) -> int:
    """Peak of bytes allocated above the level at the start of ``step()`` on a CUDA device."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - start


def malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc only; a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssWatcher:
    """Samples this process's RSS every ``interval`` seconds in a thread; ``growth`` = peak - start.

    ``with RssWatcher() as w: step()`` then ``w.growth`` (bytes). A 1 ms interval catches the
    peak of steps that last tens of milliseconds or more, which every measured step does.
    """

    def __init__(self, interval: float = 0.001):
        import psutil

        self._proc = psutil.Process(os.getpid())
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> "RssWatcher":
        malloc_trim()
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def measure_step_memory(step: Callable[[], object], device: torch.device,
                        resident: Callable[[], Iterable[torch.Tensor | None]],
                        prepare: Callable[[], object] | None = None) -> dict[str, int | None]:
    """Peak tensor bytes (see module doc) and RSS growth of one call of an already warmed-up ``step``.

    Args:
        step: one forward (or training) step; called twice (allocator pass, then RSS pass).
        device: where it runs.
        resident: returns the tensors the step owns before it starts (weights, grads, optimiser state, input).
        prepare: called before each measured call; training steps drop their gradients here
            (``zero_grad(set_to_none=True)``), because the CPU profiler cannot see the free of a block
            allocated before it started, which would count the old and the new gradients both.

    Returns:
        {"peak_tensor_bytes", "resident_bytes", "step_peak_bytes", "rss_growth_bytes"} (the peaks are
        None on MPS, which has no peak counter).
    """
    prepare = prepare or (lambda: None)
    prepare()
    res = tensor_bytes(resident())
    if device.type == "cuda":
        in_step = cuda_step_peak_bytes(step, device)
    elif device.type == "cpu":
        in_step = cpu_step_peak_bytes(step)
    else:  # MPS has no per-step peak counter: say so rather than report a different quantity
        in_step = None
    prepare()
    with RssWatcher() as w:
        step()
        synchronize(device)
    return {"peak_tensor_bytes": None if in_step is None else res + in_step, "resident_bytes": res, "step_peak_bytes": in_step,
            "rss_growth_bytes": w.growth}
