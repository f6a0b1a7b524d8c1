"""The pre-flight memory estimate against the memory runs really took (issue 14 item 5, the CPU half).

The figures are the process's peak resident memory (load included) that `python -m benchmarks.memory_estimate_check`
measured on 2026-12-02 on the development machine (2 cores, 24 GiB, torch 2.13.0 CPU): the trainer's steps through
`sd_scripts.bench` on SD1.5's real shapes with random weights, LoRA dim 4 on the U-Net and the text encoder, AdamW,
cached latents, SDPA attention. The issue's target is 20%; the estimate meets each within 10%.
"""

from __future__ import annotations

import pytest

from wizard.memory_estimate import SD1, LoraShape, TrainingSetup, estimate_training_memory

MEASURED_GB = {  # (resolution, batch, precision, gradient checkpointing): peak RSS in GiB
    (256, 1, "no", False): 5.12,
    (256, 1, "bf16", False): 3.09,
    (512, 1, "no", False): 6.98,
    (512, 1, "no", True): 5.63,
    (512, 4, "no", False): 14.95,
    (512, 4, "no", True): 10.37,
    (512, 1, "bf16", False): 4.18,
}


@pytest.mark.parametrize(("setting", "measured"), MEASURED_GB.items(), ids=[str(s) for s in MEASURED_GB])
def test_the_cpu_estimate_is_within_ten_percent_of_the_measured_peak(setting, measured):
    resolution, batch, precision, checkpointing = setting
    setup = TrainingSetup(resolution=(resolution, resolution), batch_size=batch, mixed_precision=precision,
                          gradient_checkpointing=checkpointing, cache_latents=True, optimizer="AdamW",
                          lora=LoraShape(dim=4), on_gpu=False)
    assert estimate_training_memory(setup, SD1).total_gb == pytest.approx(measured, rel=0.10)


def test_on_a_cpu_the_parts_that_leave_the_gpu_still_count():
    """Cached latents and text-encoder outputs free the VAE and the text encoders from the GPU, not from RAM."""
    setup = TrainingSetup(resolution=(512, 512), batch_size=1, mixed_precision="no", gradient_checkpointing=False,
                          cache_latents=True, optimizer="AdamW", lora=LoraShape(dim=4, train_text_encoder=False),
                          on_gpu=False, cache_text_encoder_outputs=True)
    on_cpu = estimate_training_memory(setup, SD1).frozen_weights_gb
    on_gpu = estimate_training_memory(TrainingSetup(**{**setup.__dict__, "on_gpu": True}), SD1).frozen_weights_gb
    assert on_cpu * 1024**3 == (SD1.unet_params + SD1.text_encoder_params + SD1.vae_params) * 4
    assert on_gpu * 1024**3 == SD1.unet_params * 4
