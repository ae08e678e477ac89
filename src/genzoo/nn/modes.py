"""Switching a module to evaluation mode for a while and back, whatever happens in between."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn


@contextmanager
def evaluating(module: nn.Module, no_grad: bool = True) -> Iterator[nn.Module]:
    """``module`` in evaluation mode (dropout off, batch norm on its running statistics), without gradients unless
    ``no_grad=False``; its own training flags are put back on exit, also when the body raises."""
    modes = [(m, m.training) for m in module.modules()]  # submodules may have been set apart from the parent
    module.eval()
    try:
        with torch.no_grad() if no_grad else nullcontext():
            yield module
    finally:
        for m, training in modes:
            m.training = training
