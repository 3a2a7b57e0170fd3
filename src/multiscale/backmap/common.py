"""Small shared pieces of the backmapping engine: seeds, torch threads, device check."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from ..errors import MultiscaleError

if TYPE_CHECKING:
    import torch

__all__ = ["derive_seed", "torch_threads", "check_device"]


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` torch intra-op threads (default 1: the per-op work of this engine is
    small, and OpenMP spinning on a loaded 2-core machine costs far more than it gains)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def derive_seed(*parts: int) -> int:
    """A 32-bit seed derived from ``parts`` (ints; sign dropped) by :class:`numpy.random.SeedSequence`."""
    return int(np.random.SeedSequence([int(abs(p)) for p in parts]).generate_state(1)[0])


def check_device(device) -> torch.device:
    """The torch device for ``device`` ("cpu", "cuda", "cuda:1", ...), or a clear error when
    torch cannot use it here."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise MultiscaleError(f"--device {device!r} is not a torch device: use cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MultiscaleError(f"--device {device}: torch sees no CUDA GPU here (torch {torch.__version__}, "
                              "cuda available: False): use --device cpu or install a CUDA build of torch")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise MultiscaleError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return dev

