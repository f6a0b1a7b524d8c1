"""The pre-flight report warns when nvidia-smi sees an NVIDIA GPU that the installed PyTorch cannot use.

nvidia-smi is the stand-in of tests/test_launcher_cuda_build.py. The first test uses the PyTorch installed here (a CPU
build on the machines without a GPU that run this suite); the others describe a CUDA build as torch would. The fix
is pip's command for PyTorch's wheel index:
torch==<release>+<build> --index-url https://download.pytorch.org/whl/<build>.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_launcher_cuda_build import nvidia_smi  # noqa: F401
from test_preflight_fixtures import make_messy_dataset, small_config, tiny_model  # noqa: F401
from wizard.askers.base import line_up_columns
from wizard.hardware import CUDA_BUILDS, TorchBuild, gpu_warning, read_nvidia
from wizard.preflight import preflight_report

ROOT = Path(__file__).resolve().parents[1]
CU126_ARCHS = ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")
CU130_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")
PYTHON = r"C:\Users\My Name\LoRA (2)\.venv\Scripts\python.exe"


def test_a_cpu_build_beside_an_nvidia_gpu_is_reported_with_the_command_that_fixes_it(nvidia_smi, tiny_model,
                                                                                       tmp_path):
    import torch

    if torch.version.cuda is not None:  # a GPU machine's PyTorch: the tests below describe CUDA builds instead
        pytest.skip(f"PyTorch {torch.__version__} is a CUDA build; this test is about a CPU build.")
    nvidia_smi("rtx4090-cuda13.0")
    images, _ = make_messy_dataset(tmp_path / "data", regularization=False)
    report = preflight_report(small_config(tiny_model, images, tmp_path / "out"))
    text = line_up_columns(report.text())
    release = torch.__version__.split("+")[0]
    assert ("PyTorch and the GPU\nThis computer has an NVIDIA GeForce RTX 4090, but the installed PyTorch "
            f"{torch.__version__} is a build without CUDA, so training would run on the CPU") in text
    assert (f'To fix it, run: "{sys.executable}" -m pip install torch=={release}+cu130 --index-url '
            "https://download.pytorch.org/whl/cu130") in text
    assert "GPU: NVIDIA GeForce RTX 4090, 24.0 GB, 23.0 GB free." in text  # the same stand-in answered the memory


def test_a_build_without_kernels_for_the_card_names_the_build_that_has_them(nvidia_smi):
    nvidia_smi("rtx5090-cuda13.0")
    warning = gpu_warning(read_nvidia(), TorchBuild("2.13.0+cu126", "12.6", CU126_ARCHS, True), PYTHON)
    assert warning == (
        "The installed PyTorch 2.13.0+cu126 has no kernels for the NVIDIA GeForce RTX 5090 (compute capability 12.0), "
        f'so training would fail on it. To fix it, run: "{PYTHON}" -m pip install torch==2.13.0+cu130 --index-url '
        "https://download.pytorch.org/whl/cu130")


def test_a_build_too_new_for_the_driver_names_the_build_the_driver_runs(nvidia_smi):
    nvidia_smi("rtx4090-cuda12.4")
    warning = gpu_warning(read_nvidia(), TorchBuild("2.13.0", "13.0", (), False), PYTHON)  # Linux's PyPI torch
    assert warning == (
        "The installed PyTorch 2.13.0 (built for CUDA 13.0) cannot use the NVIDIA GeForce RTX 4090, so training "
        f'would run on the CPU. To fix it, run: "{PYTHON}" -m pip install torch==2.13.0+cu126 --index-url '
        "https://download.pytorch.org/whl/cu126")


def test_the_right_build_on_an_old_driver_asks_for_a_driver_update_only(nvidia_smi):
    nvidia_smi("rtx5090-cuda12.8")
    warning = gpu_warning(read_nvidia(), TorchBuild("2.13.0+cu130", "13.0", (), False), PYTHON)
    assert warning is not None and "pip install" not in warning
    assert warning.endswith("The NVIDIA driver supports CUDA 12.8, but PyTorch needs CUDA 13 or newer for the NVIDIA "
                            "GeForce RTX 5090: update the driver from https://www.nvidia.com/drivers (until then "
                            "training uses the CPU).")


def test_a_build_that_uses_the_gpu_gives_no_warning(nvidia_smi, tiny_model, tmp_path):
    nvidia_smi("rtx4090-cuda13.0")
    assert CUDA_BUILDS[0].arch_list == CU130_ARCHS
    assert gpu_warning(read_nvidia(), TorchBuild("2.13.0+cu130", "13.0", CU130_ARCHS, True), PYTHON) is None
    images, _ = make_messy_dataset(tmp_path / "data", regularization=False)
    report = preflight_report(small_config(tiny_model, images, tmp_path / "out"), check_torch=lambda: None)
    assert report.gpu_warning is None and "PyTorch and the GPU" not in report.text()


def test_without_an_nvidia_gpu_torch_is_not_even_imported(tmp_path):
    code = ("import sys; from wizard.hardware import torch_gpu_warning; "
            "print(torch_gpu_warning(), 'torch' in sys.modules)")
    answer = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": str(tmp_path)})
    assert answer.stdout == "None False\n", answer.stderr
