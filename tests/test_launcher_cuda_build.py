"""Which PyTorch CUDA build the launcher installs: read from nvidia-smi, as `python -m wizard.hardware` answers it.

The machines are nvidia-smi fixtures (tests/launcher/nvidia-smi/) answered by a stand-in nvidia-smi on PATH. The
expected builds follow from PyTorch's support matrix for torch 2.13 (CUDA 12.6: Maxwell to Hopper, sm_50 to sm_90;
CUDA 13.0: Turing to Blackwell, sm_75 to sm_120), NVIDIA's compute capabilities (RTX 4090 8.9, RTX 5090 12.0,
GTX 1080 6.1, GTX 780 3.5, RTX 3060 8.6) and CUDA's rule that a driver runs every build of its CUDA major version.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from wizard.hardware import (NvidiaGpu, NvidiaReport, choose_cuda_build, has_kernels_for, parse_driver_cuda, parse_gpus,
                             read_nvidia)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "launcher" / "nvidia-smi"


@pytest.fixture
def nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Put a stand-in nvidia-smi on PATH that answers as the named fixture's machine."""
    folder = tmp_path / "nvidia-smi-bin"
    folder.mkdir()
    program = folder / "nvidia-smi"
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests" / "launcher" / "nvidia_smi.py"}" "$@"\n')
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    def use(machine: str) -> None:
        monkeypatch.setenv("NVIDIA_SMI_FIXTURE", str(FIXTURES / f"{machine}.json"))

    return use


def launcher_asks(*, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """What run_popup.bat runs: `python -m wizard.hardware`, from the checkout."""
    return subprocess.run([sys.executable, "-m", "wizard.hardware"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)


@pytest.mark.parametrize(("machine", "build"), [
    ("rtx4090-cuda13.0", "cu130"),  # both builds run an Ada card; the driver runs the newer
    ("rtx4090-cuda12.4", "cu126"),  # a CUDA 12 driver runs 12.6 (same major version), not 13.0
    ("rtx5090-cuda13.0", "cu130"),  # Blackwell: only the 13.0 build has sm_120 kernels
    ("gtx1080-cuda13.0", "cu126"),  # Pascal: only the 12.6 build has sm_60 kernels, and a 13.0 driver runs it
    ("rtx3060-old-driver-cuda11.4", "cu126"),  # no compute_cap field: chosen by the driver, which needs an update
])
def test_the_build_fits_the_card_and_the_driver(nvidia_smi, machine: str, build: str):
    nvidia_smi(machine)
    answer = launcher_asks()
    assert (answer.returncode, answer.stdout) == (0, f"{build}\n"), answer.stderr


def test_an_rtx_50xx_with_a_cuda_12_driver_gets_the_blackwell_build_and_is_told_to_update_the_driver(nvidia_smi):
    nvidia_smi("rtx5090-cuda12.8")
    answer = launcher_asks()
    assert (answer.returncode, answer.stdout) == (0, "cu130\n")
    assert answer.stderr == ("The NVIDIA driver supports CUDA 12.8, but PyTorch needs CUDA 13 or newer for the NVIDIA "
                             "GeForce RTX 5090: update the driver from https://www.nvidia.com/drivers (until then "
                             "training uses the CPU).\n")


def test_a_card_no_build_supports_gets_no_cuda_build(nvidia_smi):
    nvidia_smi("gtx780-cuda11.4")
    answer = launcher_asks()
    assert (answer.returncode, answer.stdout) == (1, "")
    assert "No PyTorch CUDA build has kernels for the NVIDIA GeForce GTX 780 (compute capability 3.5)" in answer.stderr


def test_without_nvidia_smi_nothing_is_installed_and_nothing_said(tmp_path: Path):
    answer = launcher_asks(env={**os.environ, "PATH": str(tmp_path)})
    assert (answer.returncode, answer.stdout, answer.stderr) == (1, "", "")


def test_read_nvidia_reads_the_header_and_the_cards(nvidia_smi):
    nvidia_smi("rtx5090-cuda12.8")
    report = read_nvidia()
    assert report is not None
    assert report.driver_cuda == (12, 8)
    assert report.gpus == (NvidiaGpu("NVIDIA GeForce RTX 5090", (12, 0)),)
    nvidia_smi("rtx3060-old-driver-cuda11.4")
    assert read_nvidia().gpus == (NvidiaGpu("NVIDIA GeForce RTX 3060", None),)


def test_parsers_read_nvidia_smi_formats():
    header = "| NVIDIA-SMI 580.95.05              Driver Version: 580.95.05      CUDA Version: 13.0     |"
    assert parse_driver_cuda(header) == (13, 0)
    assert parse_driver_cuda("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") is None
    assert parse_gpus("NVIDIA GeForce RTX 4090, 8.9\nNVIDIA H100 80GB HBM3, 9.0\n") == (
        NvidiaGpu("NVIDIA GeForce RTX 4090", (8, 9)), NvidiaGpu("NVIDIA H100 80GB HBM3", (9, 0)))


@pytest.mark.parametrize(("arch_list", "capability", "runs"), [
    (("sm_80", "sm_86", "sm_90"), (8, 9), True),  # sm_86 code runs on 8.9 (same major, higher minor)
    (("sm_80", "sm_86", "sm_90"), (8, 0), True),
    (("sm_86", "sm_90"), (8, 0), False),  # not on a lower minor
    (("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"), (12, 0), False),  # cu126 on an RTX 5090
    (("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"), (12, 0), True),  # cu130 on an RTX 5090
    (("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"), (6, 1), False),  # cu130 on a GTX 1080
    (("sm_80", "compute_90"), (12, 0), True),  # PTX is compiled for newer cards
    (("sm_90a",), (9, 0), True),
])
def test_kernels_follow_cudas_compatibility_rule(arch_list, capability, runs: bool):
    assert has_kernels_for(arch_list, capability) is runs


def test_every_card_of_several_must_have_kernels():
    cards = (NvidiaGpu("NVIDIA GeForce RTX 4090", (8, 9)), NvidiaGpu("NVIDIA GeForce GTX 1080", (6, 1)))
    build, advice = choose_cuda_build(NvidiaReport((13, 0), cards))
    assert build is not None and (build.name, advice) == ("cu126", None)
