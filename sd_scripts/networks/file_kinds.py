"""What kind of network a saved file holds, and for which model family, read from its tensor names and metadata
alone (no torch needed), so that a file to continue from or to merge is checked before any model loads.

An SDXL file is told by its names (sd-scripts': `lora_te1_` / `lora_te2_`, and SGM U-Net names `lora_unet_input_blocks_`,
`lora_unet_middle_block_`, `lora_unet_output_blocks_`), an SD 1.x/2.x file by `lora_te_` and diffusers U-Net names
(`lora_unet_down_blocks_`, `lora_unet_mid_block_`, `lora_unet_up_blocks_`, `lora_unet_conv_in`...); a file whose
names say neither is told by its `ss_base_model_version` metadata.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from sd_scripts.errors import UserFacingError
from sd_scripts.untrusted import shown
from sd_scripts.networks.kinds import KOHYA_DYLORA_MODULE, KOHYA_LORA_MODULE, LYCORIS_MODULE, MODULE_ALIASES
from sd_scripts.networks.sgm_names import is_sdxl_lora_key

# Tensor names that only LyCORIS writes (LoHa, LoKr, IA3, DoRA, Tucker/CP, full and norm modules).
LYCORIS_ONLY_SUFFIXES = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
                         "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t1", "lokr_t2",
                         "on_input", "dora_scale", "lora_mid.weight", "diff", "diff_b", "w_norm", "b_norm")
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
# Layers LyCORIS' presets train and kohya's networks never do: a plain lora_down file with them is LyCORIS' LoCon
# (the diffusers names, and their SGM names in an SDXL file).
LYCORIS_ONLY_LAYERS = ("lora_unet_conv_in.", "lora_unet_conv_out.", "lora_unet_time_embedding_",
                       "lora_unet_input_blocks_0_0.", "lora_unet_out_2.", "lora_unet_time_embed_", "lora_unet_label_emb_")
# LyCORIS' algo, told by the first tensor name that only it writes.
ALGO_OF_SUFFIX = (("hada_", "loha"), ("lokr_", "lokr"), ("on_input", "ia3"))
SDXL_VERSION_START = "sdxl"  # ss_base_model_version of every SDXL file sd-scripts writes ("sdxl_base_v1-0", ...)
SD_FAMILY, SDXL_FAMILY = "SD 1.x/2.x", "SDXL"


def file_network_module(keys: Collection[str], metadata: Mapping[str, str]) -> str:
    """Which network module wrote a file with these tensor names: its `ss_network_module` if it says, else what
    its keys show. One sentence names what was found when the file is not a network this trainer can read.
    """
    declared = MODULE_ALIASES.get(metadata.get("ss_network_module", ""), metadata.get("ss_network_module", ""))
    lycoris_keys = any(_is_lycoris_key(key) for key in keys)
    if declared in (KOHYA_LORA_MODULE, KOHYA_DYLORA_MODULE, LYCORIS_MODULE) and _has_kohya_keys(keys):
        return LYCORIS_MODULE if lycoris_keys else declared
    if lycoris_keys and _has_kohya_keys(keys):
        return LYCORIS_MODULE
    if any(key.endswith(".lora_down.weight") for key in keys) and _has_kohya_keys(keys):
        return KOHYA_LORA_MODULE
    raise UserFacingError(f"This file is not a LoRA this trainer can continue: {describe_keys(keys)}; "
                          "choose a LoRA or LyCORIS file made by sd-scripts or this trainer.")


def file_is_sdxl(keys: Collection[str], metadata: Mapping[str, str]) -> bool | None:
    """Whether a LoRA/LyCORIS file was made for SDXL (its names, else its metadata); None when nothing says."""
    kohya_keys = [key for key in keys if key.startswith(KOHYA_PREFIXES)]
    if kohya_keys:
        return any(is_sdxl_lora_key(key) for key in kohya_keys)
    version = metadata.get("ss_base_model_version")
    return version.startswith(SDXL_VERSION_START) if version else None


def require_file_fits_model(name: str, keys: Collection[str], metadata: Mapping[str, str], *,
                            model_is_sdxl: bool) -> None:
    """Refuse, in one sentence, a network file of the other family than the base model (SDXL vs SD 1.x/2.x)."""
    file_sdxl = file_is_sdxl(keys, metadata)
    if file_sdxl is None or file_sdxl == model_is_sdxl:
        return
    file_family, model_family = (SDXL_FAMILY, SD_FAMILY) if file_sdxl else (SD_FAMILY, SDXL_FAMILY)
    raise UserFacingError(f"{name} was made for {file_family} models but the base model is {model_family}; choose "
                          f"an {file_family} base model or a file made for {model_family}.")


def file_lycoris_algo(keys: Collection[str]) -> str:
    """The LyCORIS algo of a lycoris.kohya file: loha, lokr or ia3 by their tensor names, else locon."""
    for key in keys:
        suffix = key.split(".", 1)[-1]
        for start, algo in ALGO_OF_SUFFIX:
            if suffix.startswith(start):
                return algo
    return "locon"


def read_file_keys(path: str | Path) -> tuple[list[str], dict[str, str]]:
    """The tensor names and metadata of a .safetensors file, read from its header only."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as file:
            return list(file.keys()), dict(file.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise UserFacingError(f"{path} cannot be read as a .safetensors LoRA ({error}); choose another file.") \
            from None


def _is_lycoris_key(key: str) -> bool:
    return (key.split(".", 1)[-1] in LYCORIS_ONLY_SUFFIXES or key.endswith(".on_input")
            or key.startswith(LYCORIS_ONLY_LAYERS))


def _has_kohya_keys(keys: Collection[str]) -> bool:
    return any(key.startswith(KOHYA_PREFIXES) for key in keys)


def describe_keys(keys: Collection[str]) -> str:
    """A few words on what a file's tensor names show, for the refusal sentence."""
    if not keys:
        return "it holds no tensors"
    keys = sorted(keys)
    if any(key.startswith("lycoris_") for key in keys):
        return "it has LyCORIS weights under the generic 'lycoris_' names, not the kohya 'lora_unet_' names"
    if any(".lora_A." in key or ".lora_B." in key for key in keys):
        return "it has diffusers/PEFT LoRA keys (lora_A/lora_B), not kohya ones"
    if any(key.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for key in keys):
        return "it is a full Stable Diffusion checkpoint, not a LoRA"
    if any(key.startswith("lora_") for key in keys):
        return f"its keys (such as {shown(keys[0])}) use tensor names no known network writes"
    return f"its keys (such as {shown(keys[0])}) are not LoRA keys"
