"""Each of the SD1.5 U-Net's convolutions on this CPU: through torch's convolution (oneDNN) and as one matrix product.

    python -m benchmarks.convolution_paths [--resolution 256] [--batch-size 1] [--precision no|bf16]
                                           [--repeats 5] [--threads 1]

The convolutions one forward pass makes are traced on the meta device (no weights are made). Each distinct one is
timed on random tensors as a LoRA step runs it: the forward, then the input's gradient (the weight frozen), the
median of --repeats after one warm-up. One row per shape: how often a step runs it, the milliseconds both ways, and
the path `MatmulConv2d` takes (sd_scripts/models/matmul_convolution.py). The totals are a step's convolutions all
through torch's convolution, with the trainer's choice, and with the faster path for every shape (the best any rule
could do on this machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F


def traced_convolutions(resolution: int, batch_size: int) -> Counter:
    """(input shape, weight shape, stride, padding) of every convolution of one SD1.5 U-Net forward, with counts."""
    from diffusers import UNet2DConditionModel

    from sd_scripts.models import SD_V1
    from sd_scripts.models.shipped_assets import component_config

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(component_config(SD_V1, "unet"))
    calls: Counter = Counter()

    def record(module: torch.nn.Conv2d, args: tuple) -> None:
        calls[(tuple(args[0].shape), tuple(module.weight.shape), module.stride, module.padding)] += 1

    for module in unet.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_pre_hook(record)
    latent = resolution // 8
    with torch.no_grad():
        unet(torch.empty(batch_size, 4, latent, latent, device="meta"), torch.zeros(batch_size, device="meta"),
             torch.empty(batch_size, 77, 768, device="meta"))
    return calls


def seconds(convolve: Callable, input: torch.Tensor, repeats: int) -> float:
    """The median time of the forward plus the input's gradient, after one warm-up."""
    durations = []
    for _ in range(repeats + 1):
        leaf = input.detach().requires_grad_()
        started = time.perf_counter()
        output = convolve(leaf)
        output.backward(torch.ones_like(output))
        durations.append(time.perf_counter() - started)
    return statistics.median(durations[1:])


def main(argv: list[str] | None = None) -> int:
    from sd_scripts.models.matmul_convolution import MatmulConv2d, conv2d_as_matmul

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--precision", choices=("no", "bf16"), default="no")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    generator = torch.Generator().manual_seed(0)

    print(f"SD1.5 U-Net at {args.resolution} px, batch {args.batch_size}, {dtype}, {args.threads} thread(s); "
          f"forward + input gradient, median of {args.repeats}")
    print(f"{'input':>22} {'weight':>22} {'stride':>6} {'a step':>6} {'torch ms':>9} {'product ms':>10} {'ratio':>6} "
          f"{'chosen':>8}")
    totals = Counter()
    for (input_shape, weight_shape, stride, padding), count in sorted(traced_convolutions(
            args.resolution, args.batch_size).items(), key=lambda item: -item[0][1][0] * item[0][1][1]):
        input = torch.randn(input_shape, generator=generator).to(dtype)
        weight = (torch.randn(weight_shape, generator=generator) * 0.01).to(dtype)
        bias = torch.randn(weight_shape[0], generator=generator).to(dtype)
        module = MatmulConv2d(weight_shape[1], weight_shape[0], weight_shape[2:], stride=stride, padding=padding,
                              device="meta")
        chosen = module.multiplies(input, weight)
        convolved = seconds(lambda x: F.conv2d(x, weight, bias, stride, padding), input, args.repeats)
        multiplied = seconds(lambda x: conv2d_as_matmul(x, weight, bias, stride, padding, (1, 1)), input, args.repeats)
        totals["torch"] += count * convolved
        totals["trainer"] += count * (multiplied if chosen else convolved)
        totals["best"] += count * min(convolved, multiplied)
        print(f"{str(input_shape):>22} {str(weight_shape):>22} {stride[0]:>6} {count:>6} {convolved * 1e3:>9.1f} "
              f"{multiplied * 1e3:>10.1f} {convolved / multiplied:>6.2f} {'product' if chosen else 'torch':>8}")
    print(f"a step's convolutions: torch {totals['torch']:.3f} s, the trainer's choice {totals['trainer']:.3f} s "
          f"({totals['torch'] / totals['trainer']:.2f}x), the faster path everywhere {totals['best']:.3f} s "
          f"({totals['torch'] / totals['best']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
