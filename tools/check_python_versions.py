"""Which Python versions the launchers may accept: those for which every pinned package has wheels everywhere.

Run it after changing requirements.txt (it needs PyPI, not a GPU; a few minutes):

    python tools/check_python_versions.py [3.10 3.11 ...]

For each Python version it asks pip to resolve requirements.txt from wheels only (`pip install --dry-run
--only-binary=:all: --platform ... --python-version ...`, downloading metadata, not packages). Linux is resolved with
the dependencies; pip evaluates dependency markers for the machine it runs on, so Windows and macOS are checked
package by package (--no-deps) against the set Linux resolved, minus the Linux-only CUDA packages. pip runs isolated
from this machine's configuration, so local wheel folders do not stand in for PyPI. A version is accepted when all
three platforms resolve; run_popup.bat, tools/ensure_venv.sh and the README list the accepted ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ("3.10", "3.11", "3.12", "3.13", "3.14", "3.15")
LINUX = tuple(f"manylinux_2_{minor}_x86_64" for minor in range(5, 40)) + (
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64")
WINDOWS = ("win_amd64",)
MACOS = tuple(f"macosx_{major}_0_{arch}" for major in range(11, 16) for arch in ("arm64", "universal2"))
LINUX_ONLY = ("nvidia-", "triton", "cuda-")  # torch's CUDA libraries, required on Linux only


def resolve(platforms: tuple[str, ...], version: str, requirements: Path, *, no_deps: bool,
            folder: Path) -> tuple[bool, list[str], str]:
    """(resolved?, the name==version list pip chose, pip's last error line)."""
    report = folder / f"report-{version}-{platforms[0]}.json"
    command = [sys.executable, "-m", "pip", "--isolated", "install", "--quiet", "--dry-run", "--ignore-installed",
               "--only-binary=:all:", "--python-version", version, "--target", str(folder / "target"),
               "--report", str(report), "-r", str(requirements)]
    command += [option for platform in platforms for option in ("--platform", platform)]
    if no_deps:
        command.append("--no-deps")
    answer = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    errors = [line for line in answer.stderr.splitlines() if line.startswith("ERROR")]
    if answer.returncode != 0:
        return False, [], errors[-1] if errors else answer.stderr.strip()[-300:]
    chosen = json.loads(report.read_text())["install"]
    return True, [f"{item['metadata']['name']}=={item['metadata']['version'].split('+')[0]}" for item in chosen], ""


def main(versions: list[str]) -> int:
    accepted = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for version in versions:
            ok, resolved, error = resolve(LINUX, version, ROOT / "requirements.txt", no_deps=False, folder=folder)
            verdicts = {"Linux": "wheels" if ok else error}
            if ok:
                pinned = folder / f"resolved-{version}.txt"
                pinned.write_text("\n".join(name for name in resolved if not name.lower().startswith(LINUX_ONLY)))
                for platform, tags in (("Windows", WINDOWS), ("macOS", MACOS)):
                    found, _, error = resolve(tags, version, pinned, no_deps=True, folder=folder)
                    verdicts[platform] = "wheels" if found else error
            for platform, verdict in verdicts.items():
                print(f"Python {version} {platform}: {verdict}")
            if len(verdicts) == 3 and all(verdict == "wheels" for verdict in verdicts.values()):
                accepted.append(version)
    print("Accepted:", " ".join(accepted) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(VERSIONS)))
