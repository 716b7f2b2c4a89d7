"""Scalar value head: a linear layer on the LM's last hidden state, always computed in float32."""

from __future__ import annotations

import torch


def hidden_size_of(config) -> int:
    """``config.text_config.hidden_size`` when there is a text sub-config, else ``config.hidden_size``."""
    text_config = getattr(config, "text_config", None)
    if text_config is not None and getattr(text_config, "hidden_size", None):
        return int(text_config.hidden_size)
    return int(config.hidden_size)


class ValueHead(torch.nn.Module):
    """``values = Linear(hidden_size, 1)(hidden.float()).squeeze(-1)`` with fp32 weights."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = torch.nn.Linear(hidden_size, 1, dtype=torch.float32)
        torch.nn.init.normal_(self.summary.weight, std=1.0 / (hidden_size + 1) ** 0.5)
        torch.nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.float()).squeeze(-1)
