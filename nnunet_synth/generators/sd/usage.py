"""Time per image or step, and peak GPU memory on CUDA, as the SD commands print them."""
from __future__ import annotations

import time
from contextlib import contextmanager


class Usage:
    """Accumulates the time of measured calls; on a CUDA device also reports the peak memory torch allocated."""

    def __init__(self, device, unit: str):
        import torch

        self.unit, self.calls, self.seconds = unit, 0, 0.0
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    @contextmanager
    def measure(self):
        import torch

        start = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1

    def line(self) -> str | None:
        """E.g. ``1.84 s per image (4 images), peak GPU memory 5.21 GiB``; None before the first call."""
        if not self.calls:
            return None
        text = f"{self.seconds / self.calls:.2f} s per {self.unit} ({self.calls} {self.unit}s)"
        if self.cuda:
            import torch

            text += f", peak GPU memory {torch.cuda.max_memory_allocated(self.device) / 2 ** 30:.2f} GiB"
        return text
