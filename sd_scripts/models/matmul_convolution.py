"""The U-Net's largest convolutions, at its lowest resolutions on a CPU, computed as one matrix product.

On a CPU, torch gives a float convolution to oneDNN, which first copies the weight into its own blocked layout, on
every call (a plain tensor cannot keep that layout), for the forward pass and again for the input's gradient. For
SD1.5's 1280-channel 3x3 convolutions at the U-Net's two lowest resolutions (at 256 px: 8x8 and 4x4 latents, 16 to
64 output positions) copying a 56 to 112 MiB weight costs more than the convolution itself: on one core of the
development machine, forward plus input gradient of a 2560->1280 convolution at 4x4 took 163 ms through oneDNN and
51 ms as a product, a 1280->1280 one at 8x8 99 ms against 51 ms (`benchmarks/convolution_paths.py` times every shape).
Unfolding the input (im2col) and multiplying by the weight as it lies, (out, in x 3 x 3) @ (in x 3 x 3, positions),
skips the copy; the input's gradient is the transposed product, folded back. Both give the convolution up to float
rounding. Smaller weights, or more positions (the higher resolutions, larger batches), stay with oneDNN, which is as
fast or faster there; so do GPUs (cuDNN keeps no such copy to skip).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# A weight at least this large (SD1.5's 1280 -> 1280 3x3) ...
MIN_WEIGHT_ELEMENTS = 1280 * 1280 * 3 * 3
# ... used at no more output positions than this (batch x height x width) is multiplied, not convolved.
MAX_POSITIONS = 64
# The precisions measured both ways (fp16 convolutions on a CPU were not).
MATMUL_DTYPES = (torch.float32, torch.bfloat16)


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv2d_as_matmul(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """`F.conv2d(input, weight, bias, stride, padding, dilation)` (one group, zero padding) as unfold + matmul.

    The batch is folded into the product's columns, so that it is one matrix product whatever the batch."""
    batch = input.shape[0]
    out_channels, _, kernel_h, kernel_w = weight.shape
    height = output_size(input.shape[2], kernel_h, stride[0], padding[0], dilation[0])
    width = output_size(input.shape[3], kernel_w, stride[1], padding[1], dilation[1])
    columns = F.unfold(input, (kernel_h, kernel_w), dilation=dilation, padding=padding, stride=stride)
    columns = columns.transpose(0, 1).reshape(columns.shape[1], batch * height * width)
    flat_weight = weight.reshape(out_channels, -1)
    if bias is None:
        output = torch.mm(flat_weight, columns)
    else:
        output = torch.addmm(bias.unsqueeze(1), flat_weight, columns)
    return output.reshape(out_channels, batch, height, width).transpose(0, 1).contiguous()


class MatmulConv2d(nn.Conv2d):
    """A Conv2d whose weight is large: on a CPU, at few output positions, it is computed by `conv2d_as_matmul`.

    It holds the same parameters under the same names as the Conv2d it replaces (state dicts, LoRA and LyCORIS
    layer names and hooks are unchanged); every other call is the Conv2d's own."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.multiplies(input, weight):
            return conv2d_as_matmul(input, weight, bias, self.stride, self.padding, self.dilation)
        return super()._conv_forward(input, weight, bias)

    def multiplies(self, input: torch.Tensor, weight: torch.Tensor) -> bool:
        """Whether this call is one of the kind measured faster as a product (see the module's docstring)."""
        if input.device.type != "cpu" or input.dtype not in MATMUL_DTYPES or input.dim() != 4:
            return False
        if self.groups != 1 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return False
        if weight.numel() < MIN_WEIGHT_ELEMENTS:
            return False
        positions = input.shape[0]
        for axis, size in enumerate(input.shape[2:]):
            positions *= output_size(size, self.kernel_size[axis], self.stride[axis], self.padding[axis],
                                     self.dilation[axis])
        return positions <= MAX_POSITIONS


def use_matmul_convolutions(model: nn.Module) -> int:
    """Replace every plain Conv2d of `model` with a weight of at least MIN_WEIGHT_ELEMENTS by a MatmulConv2d holding
    the same parameters (nothing is copied). Returns how many were replaced. Done once, after loading: hooks that
    networks put on layers later find the replacement."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Conv2d or child.weight.numel() < MIN_WEIGHT_ELEMENTS:
                continue
            replacement = MatmulConv2d(
                child.in_channels, child.out_channels, child.kernel_size, stride=child.stride, padding=child.padding,
                dilation=child.dilation, groups=child.groups, bias=child.bias is not None,
                padding_mode=child.padding_mode, device="meta",
            )
            replacement.weight = child.weight
            replacement.bias = child.bias
            replacement.train(child.training)
            setattr(parent, name, replacement)
            replaced += 1
    return replaced
