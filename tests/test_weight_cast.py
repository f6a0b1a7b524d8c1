"""Issue 14, item 3 (fewer kernel launches a step): under autocast the network's float32 weights are cast to the half
precision by one operation a step, and their gradients back by one, instead of four operations per LoRA module.

Autocast rounds each float32 weight to bf16/fp16 where a `linear`/`conv2d` uses it and casts its gradient back to
float32 in the backward pass: the gradients with the step's single cast must be those to the bit, and the operations
saved are, by that count, four per module less the four of the single cast (a concatenation and a cast each way).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from sd_scripts.networks.dylora import DyLoRANetwork
from sd_scripts.networks.lora import LoRANetwork
from sd_scripts.train import train
from sd_scripts.training import precision
from sd_scripts.training.precision import network_cast_dtype
from test_lora_fixtures import tiny_text_encoder, tiny_unet
from test_train_fixtures import demo_args, one_repeat_images  # noqa: F401 (a fixture)


class Operations(TorchDispatchMode):
    """The operations dispatched (views left out), by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket.__name__ != "_unsafe_view":
            self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def lora_setup(network_class=LoRANetwork, **options):
    """A tiny SD1.5-layout U-Net and text encoder in bf16 with a float32 network on them, its up weights made non-zero
    so that every weight gets a gradient."""
    unet, text_encoder = tiny_unet().to(torch.bfloat16), tiny_text_encoder().to(torch.bfloat16)
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    network = network_class(text_encoder, unet, dim=4, alpha=1.0, **options)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.1)
    network.apply_to()
    network.train()
    return unet, text_encoder, network


def step_gradients(unet, text_encoder, network, cast_dtype, *, text_encoder_grad: bool = True, seed: int = 0):
    """One forward and backward of text encoder and U-Net under CPU bf16 autocast, inside the network's single cast
    for `cast_dtype` (None: autocast casts each weight); the gradients by name and the operations dispatched."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 49406, (2, 77), generator=generator)
    latents = torch.randn(2, 4, 8, 8, generator=generator).to(torch.bfloat16)
    torch.manual_seed(seed)  # DyLoRA draws its block of ranks
    network.zero_grad(set_to_none=True)
    with Operations() as operations, network.weights_cast_once(cast_dtype):
        with torch.autocast("cpu", torch.bfloat16):
            with torch.set_grad_enabled(text_encoder_grad):
                context = text_encoder(ids).last_hidden_state
            prediction = unet(latents, 500, context).sample
        prediction.float().pow(2).mean().backward()
    gradients = {name: None if p.grad is None else p.grad.clone() for name, p in network.named_parameters()}
    return gradients, operations.names


@pytest.mark.parametrize("options", [{}, {"conv_dim": 4, "conv_alpha": 1.0}], ids=["lora", "locon"])
def test_one_cast_a_step_gives_autocasts_gradients_to_the_bit_with_four_operations_less_per_module(options):
    unet, text_encoder, network = lora_setup(**options)
    modules = len(network.loras)
    assert modules > 0 and (not options or any(isinstance(network.targets[lora.lora_name], torch.nn.Conv2d)
                                               and network.targets[lora.lora_name].kernel_size == (3, 3)
                                               for lora in network.loras))
    autocasts, autocast_operations = step_gradients(unet, text_encoder, network, None)
    together, together_operations = step_gradients(unet, text_encoder, network, torch.bfloat16)

    assert autocasts.keys() == together.keys()
    for name, gradient in autocasts.items():
        assert gradient is not None and gradient.dtype == torch.float32, name
        assert torch.equal(gradient, together[name]), name
    assert len(autocast_operations) - len(together_operations) == 4 * modules - 4
    assert together_operations.count("_to_copy") == autocast_operations.count("_to_copy") - 4 * modules + 2
    assert all(lora.cast_weights is None for lora in network.loras)  # nothing outlives the step


def test_a_text_encoder_run_without_gradients_leaves_its_weights_without_a_gradient():
    """The text encoder after stop_text_encoder_training: its LoRA weights get no gradient (None, which optimizers
    skip), not zeros (which AdamW would decay); the U-Net's get autocast's gradients."""
    unet, text_encoder, network = lora_setup()
    autocasts, _ = step_gradients(unet, text_encoder, network, None, text_encoder_grad=False)
    together, _ = step_gradients(unet, text_encoder, network, torch.bfloat16, text_encoder_grad=False)
    text_encoder_names = [name for name in together if name.startswith("lora_te")]
    assert text_encoder_names and all(together[name] is None and autocasts[name] is None
                                      for name in text_encoder_names)
    for name, gradient in autocasts.items():
        if not name.startswith("lora_te"):
            assert torch.equal(gradient, together[name]), name


def test_gradient_checkpointing_recomputes_with_the_same_casts():
    unet, text_encoder, network = lora_setup()
    unet.enable_gradient_checkpointing()
    unet.train()
    autocasts, _ = step_gradients(unet, text_encoder, network, None)
    together, operations = step_gradients(unet, text_encoder, network, torch.bfloat16)
    for name, gradient in autocasts.items():
        assert torch.equal(gradient, together[name]), name
    assert operations.count("_to_copy") < len(network.loras)


def test_dylora_trains_its_drawn_block_with_the_same_gradients():
    unet, text_encoder, network = lora_setup(DyLoRANetwork, unit=2)
    autocasts, _ = step_gradients(unet, text_encoder, network, None, seed=3)
    together, _ = step_gradients(unet, text_encoder, network, torch.bfloat16, seed=3)
    assert any(gradient is None for gradient in autocasts.values())  # the blocks not drawn this step
    for name, gradient in autocasts.items():
        assert (gradient is None) == (together[name] is None), name
        assert gradient is None or torch.equal(gradient, together[name]), name


def test_a_forward_outside_autocast_uses_the_float32_weights():
    """A sample or a check inside the step's context but outside autocast computes in float32 as before."""
    unet, text_encoder, network = lora_setup()
    unet.float()
    text_encoder.float()
    ids = torch.randint(0, 49406, (1, 77), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = text_encoder(ids).last_hidden_state
        with network.weights_cast_once(torch.bfloat16):
            got = text_encoder(ids).last_hidden_state
    assert got.dtype == torch.float32 and torch.equal(expected, got)


def test_a_bf16_training_run_writes_the_lora_of_one_without_the_single_cast(demo, one_repeat_images, tmp_path,
                                                                            monkeypatch):  # noqa: F811
    """The trainer as a user runs it (bf16 mixed precision, text encoder and U-Net trained, checkpointing on): the
    same LoRA file to the bit as when autocast casts every weight itself."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)  # emulated where the CPU lacks it
    settings = dict(mixed_precision="bf16", max_train_steps=3, gradient_checkpointing=True, cache_latents=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        together = train(demo_args(demo, one_repeat_images, tmp_path / "together", **settings))
        monkeypatch.setattr(LoRANetwork, "weights_cast_once", lambda self, dtype: contextlib.nullcontext())
        autocasts = train(demo_args(demo, one_repeat_images, tmp_path / "autocast", **settings))
    finally:
        torch.set_num_threads(threads)
    assert together.ok and autocasts.ok, (together.message, autocasts.message)
    expected, got = load_file(autocasts.lora_path), load_file(together.lora_path)
    assert expected.keys() == got.keys() and any(key.startswith("lora_te") for key in got)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_the_trainer_casts_once_in_mixed_precision_unless_the_unet_is_compiled():
    assert network_cast_dtype("bf16", compiled=False) is torch.bfloat16
    assert network_cast_dtype("fp16", compiled=False) is torch.float16
    assert network_cast_dtype("no", compiled=False) is None  # fp32: autocast is off, nothing is cast
    assert network_cast_dtype("bf16", compiled=True) is None  # the compiled graph casts inside itself
