"""Speed, memory and the noise: mixed precision, gradient checkpointing, noise offset and min-SNR weighting."""

from __future__ import annotations

from wizard.question import Question

from questions.build import field_help, gate, is_set

MIXED_PRECISIONS = ("fp16", "bf16", "no")  # the popups' order, the GPU default first
NOISE_OFFSET_SUGGESTED = 0.1  # the popups' value
MIN_SNR_GAMMA_SUGGESTED = 5.0  # the paper's recommendation

QUESTIONS: list[Question] = [
    Question(
        id="mixed_precision", kind="choice", field="mixed_precision", choices=MIXED_PRECISIONS,
        text="Which mixed precision?",
        help=field_help("mixed_precision"),
    ),
    Question(
        id="gradient_checkpointing", kind="yesno", field="gradient_checkpointing",
        text="Use gradient checkpointing? (much less VRAM, about 30% slower)",
        help=field_help("gradient_checkpointing"),
    ),
    gate(
        "use_noise_offset", "Use noise offset? (darker darks and brighter brights)", field_help("noise_offset"),
        fields=("noise_offset",),
        start_with={"noise_offset": lambda config: NOISE_OFFSET_SUGGESTED},
    ),
    Question(
        id="noise_offset", kind="float", field="noise_offset", when=is_set("noise_offset"),
        text="Noise offset (0 to 1)?",
        help=field_help("noise_offset"),
    ),
    gate(
        "use_min_snr_gamma", "Use min-SNR gamma weighting? (often cleaner results, faster)",
        field_help("min_snr_gamma"),
        fields=("min_snr_gamma",),
        start_with={"min_snr_gamma": lambda config: MIN_SNR_GAMMA_SUGGESTED},
    ),
    Question(
        id="min_snr_gamma", kind="float", field="min_snr_gamma", when=is_set("min_snr_gamma"),
        text="Min-SNR gamma?",
        help=field_help("min_snr_gamma"),
    ),
]
