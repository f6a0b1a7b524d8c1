"""A stand-in for nvidia-smi on Linux test machines without a GPU: answers as the real one does for one machine.

The machine is a JSON fixture named by NVIDIA_SMI_FIXTURE (tests/launcher/nvidia-smi/*.json): "table" is what plain
`nvidia-smi` prints, "gpus" holds each card's query fields (name, compute_cap, memory.total and memory.used in MiB),
and "fields" the fields this driver knows (compute_cap came with newer drivers). Queries print one line per card,
the fields joined by ", ", as `--format=csv,noheader[,nounits]` does; an unknown field fails as nvidia-smi fails.
"""

from __future__ import annotations

import json
import os
import sys

MIB_FIELDS = {"memory.total", "memory.used", "memory.free"}


def main(arguments: list[str]) -> int:
    with open(os.environ["NVIDIA_SMI_FIXTURE"], encoding="utf-8") as file:
        machine = json.load(file)
    if not arguments:
        print(machine["table"], end="")
        return 0
    options = dict(argument.split("=", 1) for argument in arguments)
    fields = options["--query-gpu"].split(",")
    for field in fields:
        if field not in machine["fields"]:
            print(f'Field "{field}" is not a valid field to query.\n')
            return 2
    nounits = "nounits" in options["--format"].split(",")
    for gpu in machine["gpus"]:
        values = [gpu[field] if nounits or field not in MIB_FIELDS else f"{gpu[field]} MiB" for field in fields]
        print(", ".join(values))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
