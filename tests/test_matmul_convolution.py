"""Issue 14, item 2: the U-Net's largest convolutions at its lowest resolutions, on a CPU, as one matrix product.

The expected values are the convolution's definition: torch's own `F.conv2d` in float64. The product must be as close
to it as torch's float32/bf16 convolution is; the choice of path is checked against the rule the module states; a
training run with every U-Net convolution made a product gives the LoRA of the oneDNN convolutions.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from sd_scripts.models import load_base_model
from sd_scripts.models import matmul_convolution
from sd_scripts.models.matmul_convolution import MatmulConv2d, conv2d_as_matmul, use_matmul_convolutions
from sd_scripts.train import train
from test_train_fixtures import EventLog, demo_args, one_repeat_images  # noqa: F401 (fixtures)

CONFIGURATIONS = {  # name: (batch, in, out, size, kernel, stride, padding, dilation, bias)
    "3x3, one image (a ResNet convolution)": (1, 24, 16, 8, 3, 1, 1, 1, True),
    "3x3, a batch of three": (3, 24, 16, 8, 3, 1, 1, 1, True),
    "3x3 stride 2 (a downsampler), odd size": (2, 16, 8, 7, 3, 2, 1, 1, True),
    "1x1 without bias (a projection)": (2, 16, 24, 5, 1, 1, 0, 1, False),
    "3x3 dilated, no padding, not square kernel": (1, 8, 8, 9, (3, 2), 1, 0, 2, True),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bf16"])
@pytest.mark.parametrize("configuration", CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())
def test_the_product_is_the_convolution_forward_and_backward(configuration, dtype):
    batch, in_channels, out_channels, size, kernel, stride, padding, dilation, with_bias = configuration
    kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    generator = torch.Generator().manual_seed(0)
    exact_input = torch.randn(batch, in_channels, size, size, dtype=torch.float64, generator=generator)
    exact_weight = torch.randn(out_channels, in_channels, *kernel, dtype=torch.float64, generator=generator) * 0.1
    exact_bias = torch.randn(out_channels, dtype=torch.float64, generator=generator) if with_bias else None
    geometry = dict(stride=(stride, stride), padding=(padding, padding), dilation=(dilation, dilation))

    def run(convolve, precision):
        """The output and the gradients of input, weight and bias for a fixed upstream gradient, in float64."""
        tensors = [exact_input, exact_weight] + ([exact_bias] if with_bias else [])
        leaves = [tensor.detach().to(precision).requires_grad_() for tensor in tensors]
        output = convolve(leaves[0], leaves[1], leaves[2] if with_bias else None)
        upstream = torch.linspace(-1, 1, output.numel(), dtype=torch.float64).reshape(output.shape)
        output.backward(upstream.to(precision))
        return [output.detach().double()] + [leaf.grad.double() for leaf in leaves]

    def product(input, weight, bias):
        return conv2d_as_matmul(input, weight, bias, **geometry)

    def convolution(input, weight, bias):
        return F.conv2d(input, weight, bias, **geometry)

    exact = run(convolution, torch.float64)
    ours, torchs = run(product, dtype), run(convolution, dtype)
    for name, expected, mine, reference in zip(["output", "input grad", "weight grad", "bias grad"], exact, ours,
                                               torchs):
        assert mine.shape == expected.shape, name
        scale = expected.abs().max()
        torch_error = float((reference - expected).abs().max() / scale)
        our_error = float((mine - expected).abs().max() / scale)
        # as close to the exact convolution as torch's own in this precision (float32 errors are ~1e-7)
        assert our_error <= max(4 * torch_error, 1e-6 if dtype == torch.float32 else 1e-2), (name, our_error, torch_error)


def sd15_convolution(in_channels: int) -> MatmulConv2d:
    """One of SD1.5's 1280-channel 3x3 convolutions (its weights are never used: only the choice is asked)."""
    return MatmulConv2d(in_channels, 1280, 3, padding=1, device="meta")


def asks(module: nn.Conv2d, batch: int, size: int, *, dtype=torch.float32, device: str = "cpu") -> bool:
    input = torch.empty(batch, module.in_channels, size, size, dtype=dtype, device=device)
    return module.multiplies(input, torch.empty(module.weight.shape, device="meta"))


def test_the_product_is_chosen_only_for_large_weights_at_few_positions():
    # SD1.5 at 256 px: its 1280-channel convolutions at the 8x8 and 4x4 latents (positions = batch x height x width)
    assert asks(sd15_convolution(1280), batch=1, size=8)
    assert asks(sd15_convolution(2560), batch=4, size=4)  # 64 positions
    assert asks(sd15_convolution(2560), batch=1, size=4, dtype=torch.bfloat16)
    # more positions than MAX_POSITIONS: oneDNN (at 512 px the 16x16 level, or larger batches)
    assert not asks(sd15_convolution(1280), batch=1, size=16)
    assert not asks(sd15_convolution(1280), batch=2, size=8)
    assert not asks(sd15_convolution(2560), batch=5, size=4)
    # not measured: fp16 on a CPU, any GPU
    assert not asks(sd15_convolution(1280), batch=1, size=8, dtype=torch.float16)
    assert not asks(sd15_convolution(1280), batch=1, size=8, device="meta")
    # a stride-2 downsampler counts its output positions: 16x16 in, 8x8 out
    downsampler = MatmulConv2d(1280, 1280, 3, stride=2, padding=1, device="meta")
    assert asks(downsampler, batch=1, size=16) and not asks(downsampler, batch=1, size=32)
    # a smaller weight (640 -> 640) is never a product, at any size
    assert not asks(MatmulConv2d(640, 640, 3, padding=1, device="meta"), batch=1, size=4)
    assert not asks(MatmulConv2d(1280, 1280, 3, padding=1, groups=2, device="meta"), batch=1, size=4)


def test_only_large_plain_convolutions_are_replaced_with_the_same_parameters():
    small = nn.Conv2d(8, 8, 3, padding=1)
    large = nn.Conv2d(1280, 1280, 3, padding=1, device="meta")
    grouped = nn.Conv2d(2560, 2560, 3, padding=1, groups=2, device="meta")
    model = nn.Sequential(small, nn.Sequential(nn.GroupNorm(4, 1280), large), grouped)
    model[1].eval()
    before = dict(model.named_parameters())
    assert use_matmul_convolutions(model) == 2
    assert type(model[0]) is nn.Conv2d and type(model[1][1]) is MatmulConv2d and type(model[2]) is MatmulConv2d
    after = dict(model.named_parameters())
    assert after.keys() == before.keys() and all(after[name] is before[name] for name in before)  # nothing copied
    assert list(model.state_dict()) == list(before)
    assert not model[1][1].training  # the mode it had
    assert use_matmul_convolutions(model) == 0  # done once


def test_a_training_with_every_unet_convolution_a_product_gives_the_same_lora(demo, one_repeat_images, tmp_path,
                                                                               monkeypatch):
    """The demo's U-Net is small: with the thresholds opened, every one of its convolutions (and LoCon's hooks on
    its 3x3 ones) goes through the product; the LoRA must be the one oneDNN's convolutions give."""
    settings = dict(max_train_steps=4, network_args=["conv_dim=4", "conv_alpha=2"], train_batch_size=2)
    convolved = train(demo_args(demo, one_repeat_images, tmp_path / "convolved", **settings), EventLog())
    assert convolved.ok

    monkeypatch.setattr(matmul_convolution, "MIN_WEIGHT_ELEMENTS", 0)
    monkeypatch.setattr(matmul_convolution, "MAX_POSITIONS", 1 << 30)
    unet = load_base_model(demo.model).unet
    replaced = [module for module in unet.modules() if isinstance(module, nn.Conv2d)]
    assert replaced and all(type(module) is MatmulConv2d for module in replaced)
    products = []
    real = matmul_convolution.conv2d_as_matmul
    monkeypatch.setattr(matmul_convolution, "conv2d_as_matmul",
                        lambda *args, **kwargs: products.append(1) or real(*args, **kwargs))
    multiplied = train(demo_args(demo, one_repeat_images, tmp_path / "multiplied", **settings), EventLog())
    assert multiplied.ok and len(products) >= 4 * len(replaced)  # every convolution of every step

    expected, trained = load_file(convolved.lora_path), load_file(multiplied.lora_path)
    assert trained.keys() == expected.keys() and any("conv" in key for key in trained)
    # The whole LoRA within float tolerance. Not every tensor on its own: the time-embedding projections' LoRAs add
    # a per-channel shift that the next GroupNorm mostly removes, so their gradients are rounding noise that Adam
    # scales up to steps, whichever way the convolutions are summed.
    difference = sum(float((trained[key].double() - value.double()).pow(2).sum()) for key, value in expected.items())
    size = sum(float(value.double().pow(2).sum()) for key, value in expected.items() if not key.endswith("alpha"))
    assert (difference / size) ** 0.5 < 1e-3
    for key in [key for key in expected if "_conv" in key]:  # LoCon's modules on the 3x3 convolutions themselves
        torch.testing.assert_close(trained[key], expected[key], rtol=1e-3, atol=1e-3 * float(expected[key].abs().max()),
                                   msg=key)
