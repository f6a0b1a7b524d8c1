"""How long the LoRA tools take and how much memory they hold, on SD1.5-size files, on the CPU.

Two measurements, each in a fresh Python process so its peak resident memory (VmHWM) is its own: resizing a
dim-128 SD1.5-layout LoRA (U-Net and text encoder, alpha 64) to dim 32, and merging that LoRA into an SD1.5-size
float32 single-file checkpoint (the merged one saved as fp16, as UIs load it). The files are built first in a
temporary folder from the shipped SD1.5 configs with random weights (nothing is downloaded) and removed at the end.
Each line gives the seconds of the tool call (imports excluded), the process's peak RSS, and how much of it came
after the imports (what the tool itself held). `--small` does the same on the demo's tiny shapes (dim 16 to 4), as
a quick smoke test.

    .venv/bin/python benchmarks/lora_tools.py [--small] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {False: ("sd15", 128, 32), True: ("tiny", 16, 4)}  # --small: model shapes, LoRA dim, resized dim


def build_files(folder: Path, small: bool) -> None:
    """model.safetensors (random weights, LDM single file) and lora.safetensors (random dim-N LoRA) in `folder`."""
    import torch

    from sd_scripts.bench import random_model
    from sd_scripts.models import save_ldm_checkpoint
    from sd_scripts.networks.lora import LoRANetwork
    from sd_scripts.saving import save_lora

    name, dim, _ = SIZES[small]
    model = random_model(name)
    save_ldm_checkpoint(model, folder / "model.safetensors")
    network = LoRANetwork(model.text_encoder, model.unet, dim=dim, alpha=dim / 2)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for lora in network.loras:
            lora.lora_up.weight.copy_(torch.randn(lora.lora_up.weight.shape, generator=generator) * 0.01)
    save_lora(network.state_dict(), folder / "lora.safetensors", save_precision="fp16",
              metadata={"ss_network_dim": str(dim), "ss_network_alpha": str(dim / 2),
                        "ss_base_model_version": "sd_v1"})


def measure(step: str, folder: Path, small: bool) -> dict[str, float]:
    """Run one tool on the files in `folder` in this process: seconds, peak RSS and RSS after the imports (bytes).

    Each step imports what its tool needs before the clock starts (the merge's model loader imports diffusers)."""
    if step == "resize":
        from sd_scripts.tools.resize_lora import ResizeTarget, resize_lora

        def run() -> None:
            resize_lora(folder / "lora.safetensors", folder / "resized.safetensors", ResizeTarget(SIZES[small][2]),
                        save_precision="fp16")
    else:
        import sd_scripts.models  # noqa: F401  (diffusers, transformers)
        import sd_scripts.networks.factory  # noqa: F401
        from sd_scripts.tools.merge_lora import merge_into_checkpoint

        def run() -> None:
            merge_into_checkpoint(folder / "model.safetensors", [folder / "lora.safetensors"], [1.0],
                                  folder / "merged.safetensors", save_precision="fp16")
    imported = _peak_rss()
    started = time.perf_counter()
    run()
    return {"seconds": time.perf_counter() - started, "peak_rss": _peak_rss(), "rss_after_imports": imported}


def _peak_rss() -> int:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec; ru_maxrss keeps the peak of the
    parent that forked it (here: the parent that built the 4 GB files), so it is only the fallback elsewhere."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def run_in_fresh_process(step: str, folder: Path, small: bool, threads: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--measure", step, "--folder", str(folder), "--threads", str(threads)]
    result = subprocess.run(command + (["--small"] if small else []), cwd=ROOT, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the {step} measurement failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def describe(step: str, figures: dict[str, float], folder: Path, small: bool) -> str:
    name, dim, new_dim = SIZES[small]
    what = {"resize": f"resize a dim-{dim} {name} LoRA ({_mib(folder / 'lora.safetensors')}) to dim {new_dim}",
            "merge": f"merge it into a {name} checkpoint ({_mib(folder / 'model.safetensors')})"}[step]
    return (f"{what}: {figures['seconds']:.1f} s, peak RSS {figures['peak_rss'] / 2**20:.0f} MiB "
            f"({(figures['peak_rss'] - figures['rss_after_imports']) / 2**20:.0f} MiB above the imports)")


def _mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the demo's tiny shapes: a smoke test in seconds")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each measurement")
    parser.add_argument("--measure", choices=("resize", "merge"), help=argparse.SUPPRESS)  # a child's step
    parser.add_argument("--folder", help=argparse.SUPPRESS)  # and where the files are
    arguments = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(arguments.threads)
    if arguments.measure:
        print(json.dumps(measure(arguments.measure, Path(arguments.folder), arguments.small)))
        return 0
    with tempfile.TemporaryDirectory(prefix="lora-tools-bench-") as temporary:
        folder = Path(temporary)
        started = time.perf_counter()
        build_files(folder, arguments.small)
        print(f"built the files in {time.perf_counter() - started:.1f} s ({arguments.threads} torch threads)")
        for step in ("resize", "merge"):
            print(describe(step, run_in_fresh_process(step, folder, arguments.small, arguments.threads), folder,
                           arguments.small), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
