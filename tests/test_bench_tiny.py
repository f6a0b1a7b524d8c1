"""The benchmark on the tiny demo shapes: it runs real training steps and reports speed and memory."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sd_scripts.bench import main, random_model, run_benchmark



def test_benchmark_times_training_steps_of_the_tiny_model():
    """In the channels-last layout (a benchmark option for GPUs, whose half-precision convolutions prefer it)."""
    base = random_model("tiny")
    result = run_benchmark(model="tiny", resolution=64, batch_size=2, steps=2, warmup_steps=1, base=base,
                           channels_last=True)
    assert result.channels_last and "channels_last" in result.report().splitlines()[0]
    assert base.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert result.device == "cpu" and result.batch_size == 2
    assert 2_000_000 < result.unet_parameters < 3_000_000  # the demo's tiny SD1.5 layout
    assert result.lora_parameters > 0
    assert 0 < result.seconds_per_step < 30
    assert result.images_per_second == 2 / result.seconds_per_step
    assert result.peak_memory_kind == "process RSS" and result.peak_memory_bytes > 100 * 2**20


def test_benchmark_command_line_times_every_phase_of_a_run_and_logs_it(demo, capsys, tmp_path):
    """Load from the file, latent caching through the trainer's cache, text encoding, steps; one JSON line a run."""
    log = tmp_path / "results.jsonl"
    for _ in range(2):
        assert main(["--checkpoint", str(demo.model), "--resolution", "64", "--steps", "1", "--warmup-steps", "1",
                     "--gradient-checkpointing", "--cache-latents", "--cache-images", "2", "--text-encodings", "1",
                     "--attention", "plain", "--json-log", str(log)]) == 0
    printed = capsys.readouterr().out
    for figure in ("load (s):", "latent caching (s/image):", "text encoding (s/caption):", "warm-up (s):",
                   "s/step (median):", "images/s:", "peak memory (process RSS):"):
        assert printed.count(figure) == 2, figure
    assert "gradient checkpointing on" in printed and "attention plain" in printed
    assert "fraction of bf16 peak" not in printed  # a CPU has no GPU peak to compare with
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 2  # appended, not overwritten
    record = lines[0]
    assert record["model"] == demo.model.name and record["unet_parameters"] == 2_446_788  # the demo's U-Net
    assert record["load_seconds"] > 0 and record["latent_seconds_per_image"] > 0 and record["text_seconds_per_caption"] > 0
    assert record["peak_memory_kind"] == "process RSS" and record["peak_memory_bytes"] > 100 * 2**20
    assert record["gpu"] is None and record["command"].startswith("python -m sd_scripts.bench --checkpoint")
    assert math.isfinite(record["final_loss"]) and record["lora_change"] > 0
    assert printed.count("counted work, step:") == 2 and printed.count("counted work, latent caching") == 2
    assert record["step_gflop"] > 0 and record["latent_gflop_per_image"] > 0 and record["matmul_tflops"] > 0
    assert record["step_operations"] > 1000  # the demo model's step: thousands, as SD1.5's


def test_counted_work_follows_the_textbook_counts_and_skips_frozen_weights():
    """2·m·n·k per matrix product; a convolution is one per output pixel. Backward: the input's gradient always, the
    weight's only when it is trained (a frozen base layer costs two products, not three)."""
    from sd_scripts.bench import counted_work

    def counted_gflop(function) -> float:
        return counted_work(function)[0]

    m, k, n = 64, 128, 256
    x, weight = torch.randn(m, k), torch.randn(n, k)
    assert counted_gflop(lambda: x @ weight.T) == pytest.approx(2 * m * k * n / 1e9)
    image, kernel = torch.randn(1, 8, 16, 16), torch.randn(4, 8, 3, 3)
    assert counted_gflop(lambda: torch.nn.functional.conv2d(image, kernel, padding=1)) == pytest.approx(
        2 * 8 * 4 * 9 * 16 * 16 / 1e9)
    trained_input = torch.randn(m, k, requires_grad=True)
    frozen = counted_gflop(lambda: (trained_input @ weight.T).sum().backward())
    trained = counted_gflop(lambda: (trained_input @ weight.T.requires_grad_()).sum().backward())
    assert (frozen, trained) == (pytest.approx(2 * 2 * m * k * n / 1e9), pytest.approx(3 * 2 * m * k * n / 1e9))


def test_operations_are_counted_without_views():
    """Each operation that computes counts once; a transpose or a reshape computes nothing (it is a new view of the
    same memory) and a GPU launches no kernel for it."""
    from sd_scripts.bench import counted_work

    x, weight = torch.randn(4, 8), torch.randn(6, 8)
    assert counted_work(lambda: x @ weight.T)[1] == 1  # the product; .T is a view
    assert counted_work(lambda: (x @ weight.T).relu().reshape(-1).sum())[1] == 3  # product, relu, sum
    assert counted_work(lambda: x.reshape(2, 16).t().unsqueeze(0))[1] == 0


def test_a_bf16_autocast_cpu_step_trains(monkeypatch):
    """bf16 on the CPU (forced on, so the test holds on any CPU): the frozen model in bf16, the loss finite, the LoRA
    weights move."""
    import sd_scripts.training.precision as precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    base = random_model("tiny")
    result = run_benchmark(model="tiny", resolution=64, steps=2, warmup_steps=1, precision="bf16", cache_latents=True,
                           base=base)
    assert result.precision == "bf16" and base.unet.conv_in.weight.dtype == torch.bfloat16
    assert math.isfinite(result.final_loss) and result.lora_change > 0


def test_the_gpu_ruler_and_peaks_follow_the_issue_and_the_data_sheets():
    """Issue 14: 1.6 TFLOP per image at 512 px, scaled by the resolution squared; dense bf16 peaks by device name."""
    from sd_scripts.bench import peak_bf16_tflops, sd15_ruler_tflops

    assert sd15_ruler_tflops(512, 8, 1.0) == pytest.approx(12.8)  # 8 images a second at 512 px
    assert sd15_ruler_tflops(1024, 1, 2.0) == pytest.approx(3.2)  # 4x the pixels, half a step a second
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0 and peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA H200") == 989.0 and peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_bf16_tflops("NVIDIA GeForce RTX 4090") == 165.2 and peak_bf16_tflops("NVIDIA L40S") == 362.0
    assert peak_bf16_tflops("NVIDIA L4") == 121.0 and peak_bf16_tflops("Tesla T4") is None


def test_every_network_type_is_specified_as_training_specifies_it():
    from sd_scripts.bench import NETWORKS, network_spec
    from sd_scripts.networks.kinds import NETWORK_TYPES

    assert set(NETWORKS) == {"lora", "locon", "lycoris-locon", "loha", "lokr", "ia3", "dylora"}
    for name, kind in NETWORKS.items():
        spec = network_spec(name, dim=8, network_args=["preset=attn-mlp", "unit=2"])
        assert spec.kind is kind and kind is NETWORK_TYPES[kind.name] and spec.dim == 8
        assert spec.options.get("algo") == kind.algo  # LyCORIS' algo= comes from the type, kohya's have none
        assert spec.options.get("preset") == ("attn-mlp" if kind.takes("preset") else None)
    assert network_spec("locon", dim=8).options == {"conv_dim": 8}  # LoCon needs conv_dim: the same rank
    assert network_spec("dylora", network_args=["unit=2", "preset=full"]).options == {"unit": 2}


def test_benchmark_compares_network_types_with_lora(capsys):
    assert main(["--model", "tiny", "--resolution", "64", "--steps", "1", "--warmup-steps", "1", "--cache-latents",
                 "--network", "dylora", "locon", "--network-args", "unit=2", "--rounds", "2", "--no-json-log"]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("ratio to LoRA"):].splitlines()[1:]
    assert [line.split()[0] for line in table] == ["LoRA", "DyLoRA", "LoCon"]  # LoRA, measured too, comes first
    assert table[0].split()[-1] == "1.00"
    assert all(float(line.split()[-1]) > 0 for line in table)
    assert "DyLoRA (unit=2) 0.10 M trainable" in printed and "LoCon (conv_dim=4)" in printed
    assert printed.count("images/s:") == 6  # every round of each type is reported as it comes


def test_the_table_takes_each_ratio_within_a_round():
    """A load that comes and goes shows in the seconds; the ratio of two steps of the same round holds."""
    from dataclasses import replace

    from sd_scripts.bench import BenchResult, comparison_table

    def result(network: str, seconds: float) -> BenchResult:
        return BenchResult(model="tiny", network=network, device="cpu", resolution=64, batch_size=1, precision="no",
                           gradient_checkpointing=False, unet_parameters=1, lora_parameters=100_000,
                           seconds_per_step=seconds, images_per_second=1 / seconds, peak_memory_bytes=1,
                           peak_memory_kind="process RSS")

    lora = [result("LoRA", seconds) for seconds in (1.0, 10.0, 2.0)]  # round 2 ran on a busy machine
    loha = [replace(each, network="LoHa", seconds_per_step=seconds) for each, seconds in zip(lora, (2.0, 10.0, 6.0))]
    rows = comparison_table({"lora": lora, "loha": loha}).splitlines()
    assert "median of 3 rounds" in rows[0]
    assert rows[1].split()[-2:] == ["2.0000", "1.00"]
    assert rows[2].split()[-2:] == ["6.0000", "2.00"]  # ratios 2, 1, 3; the ratio of the medians would say 3

