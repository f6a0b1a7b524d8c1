"""Lays out kohya-ss/sd-scripts, its own venv and a stand-in torchvision for benchmarks/sd_scripts_compare.py.

    python benchmarks/sd_scripts_setup.py --mirror /work/.mirror/kohya-ss+sd-scripts/repo --into /tmp/s6

The comparison runs sd-scripts in an environment of its own (its pinned transformers, diffusers and accelerate are
older than ours). This makes it with one command, and a rerun reuses whatever is already there. Into --into:
- sdscripts/: the mirror's commit (HEAD by default) exported with `git archive`, its full hash on the first line of
  sdscripts/COMMIT.txt. Files whose blobs the mirror does not hold (it keeps no large binaries: two Windows
  bitsandbytes DLLs and a Qwen3 tokenizer.json at 48d368fa, none of them used by an SD1.5 LoRA) are left out and
  listed there.
- sdscripts-venv/: a venv made with the Python our .venv was made from; torch==2.13.0 is installed first (this
  machine's CPU build), then sd-scripts' requirements.txt, changed so: `opencv-python==V` becomes
  `opencv-python-headless==V` (the same OpenCV without the GUI libraries a server lacks); `-e .` (sd-scripts
  installing itself) is dropped, since the comparison runs in the sdscripts folder, which puts its `library` and
  `networks` on sys.path; any torch, torchvision or torchaudio line and any index URL (to a CUDA wheel index) is
  dropped, and `torch==2.13.0` is put first in the list, so that no line (`diffusers[torch]`, the unpinned
  optimizers, bitsandbytes) can swap in another torch: a conflict fails instead. The list as installed is kept in
  sdscripts-venv/requirements-installed.txt; an identical list there means the venv is done.
- tv_shim/torchvision/: the package index has no CPU torchvision to go with torch 2.13.0 (its 0.28 wheel is the CUDA
  one, which cannot load beside a CPU torch). sd-scripts imports `torchvision.transforms` at import time
  (library/train_util.py and library/utils.py), and its LoRA path uses only `transforms.Compose`,
  `transforms.ToTensor` and `transforms.Normalize` (train_util's IMAGE_TRANSFORMS); this small package of ours
  provides those three and nothing else, for sd_scripts_compare.py's `--sd-scripts-pythonpath`. It has no
  distribution metadata, so transformers and diffusers still see torchvision as absent.
Last it prints the arguments that point sd_scripts_compare.py at it (`--env DIR`).
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DEFAULT_ENV = Path(tempfile.gettempdir()) / "sd_scripts_compare_env"  # also sd_scripts_compare.py's --env default
TORCH = "torch==2.13.0"
RECORD = "COMMIT.txt"

TORCHVISION_INIT = '''"""Stand-in for torchvision in the sd-scripts comparison's environment, written by
benchmarks/sd_scripts_setup.py: only what sd-scripts' SD1.5 LoRA path uses, torchvision.transforms' Compose,
ToTensor and Normalize."""
'''

TORCHVISION_TRANSFORMS = '''"""torchvision.transforms' Compose, ToTensor and Normalize, as torchvision defines them,
for sd-scripts' LoRA path."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["Compose", "ToTensor", "Normalize"]


class Compose:
    """Applies the transforms in turn."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, value: Any) -> Any:
        for transform in self.transforms:
            value = transform(value)
        return value


class ToTensor:
    """An HWC (or HW) image, a numpy array or a PIL image, to a CHW tensor; uint8 is scaled to float in [0, 1],
    other dtypes are kept as they are (as torchvision's)."""

    def __call__(self, picture: Any) -> torch.Tensor:
        array = np.asarray(picture)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise ValueError(f"ToTensor takes an HWC or HW image, not an array of shape {array.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        if tensor.dtype == torch.uint8:
            return tensor.to(torch.get_default_dtype()).div(255)
        return tensor


class Normalize:
    """(tensor - mean) / std per channel of a (..., C, H, W) float tensor; a single mean or std covers all channels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> None:
        self.mean, self.std, self.inplace = list(mean), list(std), inplace

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point():
            raise TypeError(f"Normalize takes a float tensor, not {tensor.dtype}")
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        if (std == 0).any():
            raise ValueError("Normalize: a std of 0 would divide by zero")
        if self.inplace:
            return tensor.sub_(mean).div_(std)
        return (tensor - mean) / std


def __getattr__(name: str) -> Any:
    raise AttributeError(f"torchvision.transforms.{name} is not in the sd-scripts comparison's stand-in torchvision "
                         "(benchmarks/sd_scripts_setup.py), which has only Compose, ToTensor and Normalize")
'''


def git(mirror: Path, *arguments: str) -> bytes:
    return subprocess.run(["git", "-C", str(mirror), *arguments], check=True, capture_output=True).stdout


def export_tree(mirror: Path, commit: str, target: Path) -> str:
    """The commit's files into target (skipped when target already holds that commit); returns the full hash."""
    full = git(mirror, "rev-parse", "--verify", f"{commit}^{{commit}}").decode().strip()
    record = target / RECORD
    if record.is_file() and record.read_text().split("\n", 1)[0] == full:
        print(f"sd-scripts {full[:8]}: already in {target}")
        return full
    if target.exists() and not record.is_file():
        raise SystemExit(f"{target} exists and was not made by this script ({RECORD} missing): move it away first")
    listing = git(mirror, "ls-tree", "-r", "-z", full).split(b"\0")
    blobs = {}  # object -> paths
    for entry in filter(None, listing):
        meta, path = entry.split(b"\t", 1)
        kind, name = meta.split()[1:3]
        if kind == b"blob":
            blobs.setdefault(name.decode(), []).append(path.decode())
    checked = subprocess.run(["git", "-C", str(mirror), "cat-file", "--batch-check"], check=True, capture_output=True,
                             input="\n".join(blobs).encode()).stdout.decode().splitlines()
    missing = sorted(path for line in checked if line.endswith(" missing") for path in blobs[line.split()[0]])
    archive = git(mirror, "archive", "--format=tar", full, "--", ".", *(f":(exclude,literal){p}" for p in missing))
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(staging, filter="data")
    (staging / RECORD).write_text(full + "\n" + "".join(f"left out (not in the mirror): {p}\n" for p in missing))
    if target.exists():
        shutil.rmtree(target)  # an older commit exported by this script
    staging.rename(target)
    print(f"sd-scripts {full[:8]}: exported into {target}" + (f", {len(missing)} files not in the mirror left out"
                                                              if missing else ""))
    return full


def requirements(text: str) -> tuple[list[str], list[str]]:
    """sd-scripts' requirements.txt as we install it, and a note for each line changed or dropped."""
    kept, notes = [TORCH], []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.split(r"[\s\[<>=!~;@]", line, maxsplit=1)[0].lower().replace("_", "-")
        if line.startswith(("-e", "--editable")) or line in (".", "./"):
            notes.append(f"dropped {line!r}: sd-scripts runs from its own folder, not installed")
        elif line.startswith(("--index-url", "--extra-index-url", "-i ", "--find-links", "-f ")):
            notes.append(f"dropped {line!r}: no other index (a CUDA torch's)")
        elif name in ("torch", "torchvision", "torchaudio"):
            notes.append(f"dropped {line!r}: torch is {TORCH} (CPU), torchvision the stand-in in tv_shim")
        elif name == "opencv-python":
            headless = "opencv-python-headless" + line[len("opencv-python"):]
            kept.append(headless)
            notes.append(f"{line!r} -> {headless!r}")
        else:
            kept.append(line)
    return kept, notes


def make_venv(python: str, sd_scripts: Path, target: Path) -> Path:
    """sd-scripts' venv (reused when it already holds the same list); returns its Python."""
    kept, notes = requirements((sd_scripts / "requirements.txt").read_text())
    wanted = "\n".join(kept) + "\n"
    done = target / "requirements-installed.txt"
    interpreter = target / "bin" / "python"
    if done.is_file() and done.read_text() == wanted and interpreter.exists():
        print(f"venv: already made in {target}")
        return interpreter
    if not interpreter.exists():
        subprocess.run([python, "-m", "venv", str(target)], check=True)
    for note in notes:
        print(f"requirements.txt: {note}")
    pip = [str(interpreter), "-m", "pip", "install", "--no-input"]
    subprocess.run([*pip, TORCH], check=True)
    listing = target / "requirements-to-install.txt"
    listing.write_text(wanted)
    subprocess.run([*pip, "-r", str(listing)], check=True)
    listing.rename(done)
    print(f"venv: made in {target}")
    return interpreter


def write_shim(target: Path) -> None:
    package = target / "torchvision"
    package.mkdir(parents=True, exist_ok=True)
    for name, text in (("__init__.py", TORCHVISION_INIT), ("transforms.py", TORCHVISION_TRANSFORMS)):
        path = package / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    print(f"stand-in torchvision: {package}")


def base_python() -> str:
    """The Python this interpreter's venv (our .venv, when run with it) was made from."""
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path, required=True, help="a git clone (bare or not) of kohya-ss/sd-scripts")
    parser.add_argument("--commit", default="HEAD", help="the commit to export (default: the mirror's HEAD)")
    parser.add_argument("--into", type=Path, default=DEFAULT_ENV, help=f"the environment's folder ({DEFAULT_ENV})")
    parser.add_argument("--python", default=base_python(),
                        help="the Python to make the venv with (default: the one this Python's venv was made from)")
    settings = parser.parse_args(argv)
    into = settings.into.resolve()
    into.mkdir(parents=True, exist_ok=True)
    export_tree(settings.mirror, settings.commit, into / "sdscripts")
    make_venv(settings.python, into / "sdscripts", into / "sdscripts-venv")
    write_shim(into / "tv_shim")
    print("\nready; run the comparison with:\n"
          f"  python benchmarks/sd_scripts_compare.py --env {into}\n"
          "which is the same as\n"
          f"  python benchmarks/sd_scripts_compare.py --sd-scripts {into / 'sdscripts'} "
          f"--sd-scripts-python {into / 'sdscripts-venv' / 'bin' / 'python'} "
          f"--sd-scripts-pythonpath {into / 'tv_shim'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
