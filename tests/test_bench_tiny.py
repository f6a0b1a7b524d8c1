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
                 "--network", "dylora", "locon", "--network-args", "unit=2", "--rounds", "2"]) == 0
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
