"""The "Merge a LyCORIS into a model" popups (the original's locon_loha_merge.py): the model, the LoCon / LoHa / LoKr /
IA3 file, its weight, the output; then `sd_scripts.tools.merge_lora.merge_into_checkpoint` runs."""

from __future__ import annotations

from wizard.tool_flow import Progress, ToolConfig, ToolFlow

from questions.tool_common import ask, by_name, field, output_fields, output_path, output_questions

FIELDS = (
    field("base_model", str, None, "Model", "The SD1.x/SD2.x checkpoint to merge into.", path="file",
          extensions=("safetensors", "ckpt")),
    field("lycoris", str, None, "LyCORIS file", "A LoCon, LoHa, LoKr or IA3 file (a LoRA works too).", path="file",
          extensions=("safetensors", "ckpt", "pt")),
    field("weight", float, 1.0, "Weight", "How strongly it goes in: 1 as it is, 0.5 half.", minimum=-1.0,
          maximum=4.0, nullable=False),
    *output_fields("Default: merged.", precisions=("float", "fp16")),
)
_F = by_name(FIELDS)

QUESTIONS = (
    ask(_F["base_model"], "Choose the model to merge into.", required=True),
    ask(_F["lycoris"], "Choose the LyCORIS file (LoCon, LoHa, LoKr, IA3).", required=True),
    ask(_F["weight"], "Weight of the merge? (1 = as trained)"),
    *output_questions(_F),
)


def run(config: ToolConfig, progress: Progress) -> str:
    from sd_scripts.tools.merge_lora import merge_into_checkpoint

    path = merge_into_checkpoint(config.get("base_model"), [config.get("lycoris")], [config.get("weight")],
                                 output_path(config, "merged"), save_precision=config.get("save_precision"),
                                 progress=progress)
    return f"Saved {path}"


FLOW = ToolFlow(name="merge_lycoris", title="Merge a LyCORIS into a model", fields=FIELDS, questions=QUESTIONS,
                run=run, cli_module="sd_scripts.tools.merge_lycoris", start_label="Start merging")
