"""Small inputs of a step moved to the model's device without making the host wait for the GPU.

A copy from ordinary (pageable) memory to a GPU waits for the work already queued on the stream to finish first;
after a decode step's graph is launched, that is the whole step. The grammar masks and the sampling settings built
for the step's logits go through pinned memory instead, as non-blocking copies queued behind the graph, so the host
waits for the GPU once a step: when it reads the sampled tokens back.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (on the CPU) on ``device``: on a GPU a copy queued without waiting, elsewhere ``tensor`` itself.
    (Torch keeps the pinned buffer until the copy has run.)"""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
