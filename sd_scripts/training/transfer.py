"""Host tensors moved to the training device without making the host wait for the GPU.

A plain `tensor.to("cuda")` from ordinary (pageable) memory returns only after the copy is done, and the copy waits
for every kernel queued before it: the host stops launching work until the GPU has caught up, once per copy. A step
moves its noise, timesteps, loss weights and token ids this way, so each would drain the queue. From page-locked
memory the copy is queued like a kernel (`non_blocking=True`) and the host goes on; torch's pinned-memory cache keeps
the page-locked block alive until the copy has read it.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`tensor` on `device` (cast to `dtype` there, when given), queued behind the GPU's work instead of waiting."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        if not tensor.is_pinned():
            tensor = tensor.pin_memory()
        tensor = tensor.to(device, non_blocking=True)
    else:
        tensor = tensor.to(device)
    return tensor if dtype is None else tensor.to(dtype)
