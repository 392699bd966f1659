"""Lookahead over an EMA of the weights (Zhang et al. 2019, "Lookahead optimizer"; the
variant airbench uses): every `every` steps the slow copy moves toward the model's weights,
slow = decay * slow + (1 - decay) * fast, and the model is reset to it. The decay grows as
`max_decay * (step / total) ** power`: near 0 early (the model runs free), up to
`max_decay` at the end, where `finish()` leaves the model at the slow weights.

    lookahead = Lookahead(model)                # after the weights are initialised
    for step in range(total):
        train_step(...)
        lookahead.after_step(step + 1, total)   # steps counted from 1
    lookahead.finish()

Every floating-point tensor of the state dict takes part (BatchNorm's running statistics
too); integer ones (BN's batch counter) are left alone. `state_dict()` holds the slow
copy, for a checkpoint.
"""
from __future__ import annotations

import torch
from torch import nn


class Lookahead:
    def __init__(self, model: nn.Module, every: int = 5, max_decay: float = 0.95 ** 5,
                 power: float = 3.0):
        if every < 1 or not 0 <= max_decay < 1 or power < 0:
            raise ValueError(f"lookahead: every >= 1, 0 <= max_decay < 1 and power >= 0, got "
                             f"{every}, {max_decay}, {power}")
        self.model, self.every, self.max_decay, self.power = model, every, max_decay, power
        self.slow = {k: v.detach().clone() for k, v in self._tensors().items()}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}

    def decay_at(self, step: int, total: int) -> float:
        """The decay of the update after `step` of `total` (both counted from 1)."""
        return self.max_decay * (min(step, total) / total) ** self.power

    @torch.no_grad()
    def update(self, decay: float) -> None:
        """slow <- decay * slow + (1 - decay) * model; model <- slow."""
        for key, fast in self._tensors().items():
            slow = self.slow[key]
            slow.lerp_(fast.to(slow.dtype), 1.0 - decay)
            fast.copy_(slow)

    def after_step(self, step: int, total: int) -> None:
        """Call after every optimiser step (`step` counted from 1): updates on every
        `every`-th."""
        if step % self.every == 0:
            self.update(self.decay_at(step, total))

    def finish(self) -> None:
        """The model takes the slow weights (the end of training)."""
        self.update(1.0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.slow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.slow) ^ set(state)
        if missing:
            raise KeyError(f"lookahead state does not match the model: {sorted(missing)[:3]}")
        for key, value in state.items():
            self.slow[key].copy_(value)
