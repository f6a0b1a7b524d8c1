"""The "Merge LoRAs" popups (the original's lora_merge.py): into one LoRA or into a model, up to four LoRAs each with
a ratio from -1 to 4, the rank of a merged LoRA (or an exact concatenation), the output; then
`sd_scripts.tools.merge_lora` runs."""

from __future__ import annotations

from wizard.tool_flow import Progress, ToolConfig, ToolFlow

from questions.tool_common import ask, by_name, field, output_fields, output_path, output_questions

INTO_LORA = "Into one LoRA"
INTO_MODEL = "Into a model"
SVD = "SVD to a new rank"
CONCAT = "Concatenate (exact, rank = the sum)"
MAX_LORAS = 4

FIELDS = (
    field("merge_into", str, INTO_LORA, "Merge into", "Into one LoRA: the LoRAs become one LoRA file. Into a model: "
          "the LoRAs are baked into a checkpoint, which then needs no LoRA.", choices=(INTO_LORA, INTO_MODEL),
          nullable=False),
    field("base_model", str, None, "Model", "The SD1.x/SD2.x checkpoint to merge into (.safetensors or .ckpt).",
          path="file", extensions=("safetensors", "ckpt")),
    *(declared for number in range(1, MAX_LORAS + 1) for declared in (
        field(f"lora_{number}", str, None, f"LoRA {number}", "A LoRA file (.safetensors, .ckpt, .pt).", path="file",
              extensions=("safetensors", "ckpt", "pt"), ),
        field(f"ratio_{number}", float, 1.0, f"Ratio {number}", "How strongly this LoRA goes in: 1 as it is, 0.5 "
              "half, -1 its opposite.", minimum=-1.0, maximum=4.0, nullable=False))),
    field("method", str, SVD, "How to merge LoRAs", "SVD: the exact sum, then cut to the new rank (small file). "
          "Concatenate: the exact sum, kept whole (rank = the sum of the ranks).", choices=(SVD, CONCAT),
          nullable=False),
    field("new_rank", int, 8, "New rank", "The rank of the merged LoRA (SVD).", minimum=1, maximum=1024,
          nullable=False),
    *output_fields("Default: merged.", precisions=("float", "fp16")),
)
_F = by_name(FIELDS)


def _into_model(config: ToolConfig) -> bool:
    return config.get("merge_into") == INTO_MODEL


def _into_lora(config: ToolConfig) -> bool:
    return not _into_model(config)


def _lora_questions(number: int) -> list:
    def asked(config: ToolConfig) -> bool:
        return number == 1 or config.get(f"lora_{number - 1}") is not None

    def chosen(config: ToolConfig) -> bool:
        return config.get(f"lora_{number}") is not None

    extra = "" if number == 1 else " (Cancel or leave empty when there are no more)"
    return [ask(_F[f"lora_{number}"], f"Choose LoRA {number}.{extra}", when=asked, required=number == 1),
            ask(_F[f"ratio_{number}"], f"Ratio of LoRA {number}? (-1 to 4)", when=chosen)]


QUESTIONS = (
    ask(_F["merge_into"], "Merge the LoRAs into one LoRA, or into a model?"),
    ask(_F["base_model"], "Choose the model to merge the LoRAs into.", when=_into_model, required=True),
    *(question for number in range(1, MAX_LORAS + 1) for question in _lora_questions(number)),
    ask(_F["method"], "How should the LoRAs be merged?", when=_into_lora),
    ask(_F["new_rank"], "Rank (dim) of the merged LoRA?",
        when=lambda config: _into_lora(config) and config.get("method") == SVD),
    *output_questions(_F),
)


def run(config: ToolConfig, progress: Progress) -> str:
    from sd_scripts.tools.merge_lora import concat_loras, merge_into_checkpoint, merge_loras

    numbers = [number for number in range(1, MAX_LORAS + 1) if config.get(f"lora_{number}")]
    models = [config.get(f"lora_{number}") for number in numbers]
    ratios = [config.get(f"ratio_{number}") for number in numbers]
    save_to = output_path(config, "merged")
    precision = config.get("save_precision")
    if _into_model(config):
        path = merge_into_checkpoint(config.get("base_model"), models, ratios, save_to, save_precision=precision,
                                     progress=progress)
    elif config.get("method") == CONCAT:
        path = concat_loras(models, ratios, save_to, save_precision=precision, progress=progress)
    else:
        path = merge_loras(models, ratios, save_to, new_rank=config.get("new_rank"), save_precision=precision,
                           progress=progress)
    return f"Saved {path}"


FLOW = ToolFlow(name="merge", title="Merge LoRAs", fields=FIELDS, questions=QUESTIONS, run=run,
                cli_module="sd_scripts.tools.merge_lora", start_label="Start merging")
