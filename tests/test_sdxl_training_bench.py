"""The benchmark measures SDXL steps as the trainer takes them: U-Net only on cached text-encoder outputs (the
set-up sd-scripts documents for 8 GB), so a GPU machine can measure the real peak with `--model sdxl`."""

from __future__ import annotations

import torch

from sd_scripts.bench import run_benchmark



def test_benchmark_trains_the_unet_only_on_cached_sdxl_text_encoder_outputs(tiny_sdxl):
    trainable = {name for name, parameter in tiny_sdxl.unet.named_parameters() if parameter.requires_grad}
    try:
        result = run_benchmark(model="tiny-sdxl", base=tiny_sdxl, resolution=64, steps=1, warmup_steps=1,
                               cache_text_encoder_outputs=True, no_half_vae=True)
    finally:  # the session's model is shared: give its parameters back their requires_grad
        for name, parameter in tiny_sdxl.unet.named_parameters():
            parameter.requires_grad_(name in trainable)
        for module in (tiny_sdxl.vae, *tiny_sdxl.text_encoders):
            module.requires_grad_(True)
    assert result.unet_only and result.cached_text_encoder_outputs
    assert "U-Net only, cached text-encoder outputs" in result.report()
    # LoRA on the U-Net's linear layers only: rank 4 x (in + out) for each, no text-encoder module
    expected = sum(4 * (module.in_features + module.out_features) for name, module in tiny_sdxl.unet.named_modules()
                   if isinstance(module, torch.nn.Linear) and _kohya_lora_target(name))
    assert result.lora_parameters == expected
    assert result.seconds_per_step > 0


def _kohya_lora_target(name: str) -> bool:
    """sd-scripts' LoRA targets in the U-Net: Linear layers inside Transformer2DModel blocks (attentions)."""
    return ".attentions." in name
