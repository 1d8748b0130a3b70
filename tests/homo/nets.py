"""PyTorch modules that homo_nn's tests name by import path (`tests.homo.nets:...`)."""

from __future__ import annotations

from typing import Any

HIDDEN = 8


def mlp(features: int) -> Any:
    """The built-in numpy network's shape: features -> HIDDEN tanh units -> one logit."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(features, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 1)
    )


def two_outputs(features: int) -> Any:
    """Not a binary classifier: two outputs per row."""
    import torch

    return torch.nn.Linear(features, 2)


def not_a_module(features: int) -> Any:
    return [features]
