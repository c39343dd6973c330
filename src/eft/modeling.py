"""The final model (Algorithm 1, step 17): fine-tuned encoder + head as one ``nn.Module``."""

from __future__ import annotations

import torch
from torch import nn

from eft.encoder import TextEncoder


class EFTModel(nn.Module):
    """``P_f'`` followed by the I-ELM head ``Linear(W, b) -> g -> Linear(U)`` (Figure 1), or by
    the linear head of the standard fine-tuning baseline. ``forward`` returns class scores."""

    def __init__(self, encoder: TextEncoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(input_ids, attention_mask).float())
