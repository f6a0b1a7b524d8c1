"""The benchmark on the tiny demo shapes: it runs real training steps and reports speed and memory."""

from __future__ import annotations

import torch

from sd_scripts.bench import main, run_benchmark

torch.set_num_threads(2)


def test_benchmark_times_training_steps_of_the_tiny_model():
    result = run_benchmark(model="tiny", resolution=64, batch_size=2, steps=2, warmup_steps=1)
    assert result.device == "cpu" and result.batch_size == 2
    assert 2_000_000 < result.unet_parameters < 3_000_000  # the demo's tiny SD1.5 layout
    assert result.lora_parameters > 0
    assert 0 < result.seconds_per_step < 30
    assert result.images_per_second == 2 / result.seconds_per_step
    assert result.peak_memory_kind == "process RSS" and result.peak_memory_bytes > 100 * 2**20


def test_benchmark_command_line_prints_the_three_figures(capsys):
    assert main(["--model", "tiny", "--resolution", "64", "--steps", "2", "--warmup-steps", "1",
                 "--gradient-checkpointing", "--cache-latents"]) == 0
    printed = capsys.readouterr().out
    assert "s/step (median):" in printed and "images/s:" in printed and "peak memory (process RSS):" in printed
    assert "gradient checkpointing on" in printed
