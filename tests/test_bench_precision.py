"""bf16 on a CPU: offered only where the CPU computes it natively (AVX512-BF16 or AMX), as the kernel's flags say."""

from __future__ import annotations

import pytest

from sd_scripts.cpu_features import cpu_has_native_bf16
from sd_scripts.training.precision import resolve_mixed_precision

ZEN4_FLAGS = "flags\t\t: fpu vme sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni"  # an AMD EPYC 9004 line
SAPPHIRE_RAPIDS_FLAGS = "flags\t\t: fpu sse2 avx2 avx512f avx512bw amx_bf16 amx_tile amx_int8"
SKYLAKE_FLAGS = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl"  # AVX512 without its bf16 extension


@pytest.mark.parametrize(("flags", "native"), [(ZEN4_FLAGS, True), (SAPPHIRE_RAPIDS_FLAGS, True),
                                               (SKYLAKE_FLAGS, False), ("", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: some CPU\n{flags}\n", encoding="utf-8")
    assert cpu_has_native_bf16(cpuinfo) is native
    assert cpu_has_native_bf16(tmp_path / "no such file") is False  # Windows and macOS: not offered


def test_the_trainer_trains_bf16_on_a_cpu_only_where_the_cpu_has_it():
    assert resolve_mixed_precision("bf16", cuda=False, cpu_bf16=True) == ("bf16", [])
    precision, notes = resolve_mixed_precision("bf16", cuda=False, cpu_bf16=False)
    assert precision == "no" and "AVX512-BF16 or AMX" in notes[0]


@pytest.mark.parametrize(("cuda", "cpu_bf16", "refused"), [(False, False, True), (False, True, False),
                                                           (True, False, False)])
def test_the_mixed_precision_question_refuses_bf16_where_it_would_not_be_faster(monkeypatch, cuda, cpu_bf16, refused):
    import questions.precision
    from wizard.config import TrainConfig

    monkeypatch.setattr(questions.precision, "cpu_has_native_bf16", lambda: cpu_bf16)
    question = next(entry for entry in questions.precision.QUESTIONS if entry.id == "mixed_precision")
    config = TrainConfig(cuda=cuda)
    error = question.validate("bf16", config)
    assert (error is not None) is refused
    if refused:
        assert error.endswith("choose no (full precision).")
    assert question.validate("no", config) is None
