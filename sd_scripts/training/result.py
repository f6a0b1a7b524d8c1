"""What `sd_scripts.train` returns (kept free of torch so the wizard can import it early)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainResult:
    ok: bool
    lora_path: str | None  # the final LoRA, or the one saved when the run was stopped
    message: str  # one sentence: what happened
    advice: str | None = None  # what to try when it failed
    steps: int = 0  # optimizer steps done, counting those before a resume
    epochs: int = 0  # epochs reached
    notes: list[str] = field(default_factory=list)  # what the trainer decided on the user's behalf
    resume_state: str | None = None  # a stopped run: the state folder it continues from (the queue records it)
