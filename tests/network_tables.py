"""The keys a LyCORIS file with kohya names has for an SD1.5-layout model, and where an SDXL LoRA's keys land in an
SGM single file, written from the format.

Sources: LyCORIS' presets (which layers), SD1.5's block structure (their names), and each algorithm's tensor names
and shape rules (LyCORIS' docs/Algo-List and modules; reference/kohya_engine.md section 6.2). Nothing here is read
from a network: a layer's own shape comes from the base model, where an algorithm's tensors depend on it (LoKr).
"""

from __future__ import annotations

from torch import nn

TEXT_ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
TEXT_MLP = ("mlp.fc1", "mlp.fc2")
TRANSFORMER_CHILDREN = ("proj_in", "proj_out") + tuple(
    f"transformer_blocks.0.{child}"
    for child in ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                  "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
)
UNET_LEVELS = 4
DOWN_RESNETS, UP_RESNETS = 2, 3  # SD1.5's layers_per_block, and one more on the way up


def transformers() -> list[str]:
    """SD1.5's 16 Transformer2DModels: cross-attention in the first three down levels, the middle, the last three up."""
    paths = [f"down_blocks.{b}.attentions.{a}" for b in range(3) for a in range(DOWN_RESNETS)]
    paths += ["mid_block.attentions.0"]
    paths += [f"up_blocks.{b}.attentions.{a}" for b in (1, 2, 3) for a in range(UP_RESNETS)]
    return paths


def resnets(widths: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """Every ResnetBlock2D path with its (in, out) channels, from the block widths of the U-Net."""
    found: dict[str, tuple[int, int]] = {}
    for b in range(UNET_LEVELS):
        for r in range(DOWN_RESNETS):
            found[f"down_blocks.{b}.resnets.{r}"] = (widths[max(b - 1, 0)] if r == 0 else widths[b], widths[b])
    found["mid_block.resnets.0"] = found["mid_block.resnets.1"] = (widths[-1], widths[-1])
    reversed_widths = widths[::-1]
    for b in range(UNET_LEVELS):
        out = reversed_widths[b]
        previous = reversed_widths[max(b - 1, 0)]
        skip_widths = [reversed_widths[min(b + 1, UNET_LEVELS - 1)] if r == UP_RESNETS - 1 else out
                       for r in range(UP_RESNETS)]
        for r in range(UP_RESNETS):
            # the input is the previous output (the level below's for r == 0) concatenated with a skip connection
            found[f"up_blocks.{b}.resnets.{r}"] = ((previous if r == 0 else out) + skip_widths[r], out)
    return found


def sd15_layers(preset: str, *, text_layers: int, widths: tuple[int, ...]) -> dict[str, str]:
    """{kohya name: module path} of the layers LyCORIS' `preset` trains on an SD1.5-layout text encoder and U-Net."""
    if preset == "full":
        text = [f"{layer}.{child}" for layer in range(text_layers) for child in TEXT_ATTENTION + TEXT_MLP]
        unet = ["conv_in", "time_embedding.linear_1", "time_embedding.linear_2", "conv_out"]
        unet += [f"{block}.{child}" for block in transformers() for child in TRANSFORMER_CHILDREN]
        for path, (channels_in, channels_out) in resnets(widths).items():
            unet += [f"{path}.conv1", f"{path}.time_emb_proj", f"{path}.conv2"]
            if channels_in != channels_out:
                unet.append(f"{path}.conv_shortcut")
        unet += [f"down_blocks.{b}.downsamplers.0.conv" for b in range(UNET_LEVELS - 1)]
        unet += [f"up_blocks.{b}.upsamplers.0.conv" for b in range(UNET_LEVELS - 1)]
    elif preset == "ia3":
        text = [f"{layer}.{child}" for layer in range(text_layers)
                for child in ("self_attn.k_proj", "self_attn.v_proj", "mlp.fc2")]
        unet = [f"{block}.transformer_blocks.0.{child}" for block in transformers()
                for child in ("attn1.to_k", "attn1.to_v", "attn2.to_k", "attn2.to_v", "ff.net.2")]
    else:
        raise ValueError(preset)
    layers = {f"lora_te_text_model_encoder_layers_{path}".replace(".", "_"): f"encoder.layers.{path}" for path in text}
    layers.update({f"lora_unet_{path}".replace(".", "_"): path for path in unet})
    return layers


def balanced_split(dimension: int) -> tuple[int, int]:
    """LoKr's factor=-1 split of a dimension: the most balanced m * n = dimension with m <= n."""
    m = max(d for d in range(1, dimension + 1) if dimension % d == 0 and d * d <= dimension)
    return m, dimension // m


def tensor_names(algo: str, layer: nn.Module, *, rank: int, tucker: bool = False, dora: bool = False) -> set[str]:
    """The tensor names one LyCORIS module of `algo` saves for `layer` (a Linear or Conv2d) at `rank`."""
    three_by_three = isinstance(layer, nn.Conv2d) and layer.kernel_size != (1, 1)
    core = tucker and three_by_three
    if algo in ("lora", "locon"):
        names = {"lora_down.weight", "lora_up.weight", "alpha"} | ({"lora_mid.weight"} if core else set())
    elif algo == "loha":
        names = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"}
        names |= {"hada_t1", "hada_t2"} if core else set()
    elif algo == "lokr":
        out_dim, in_dim = layer.weight.shape[:2]
        (_, out_big), (_, in_big) = balanced_split(out_dim), balanced_split(in_dim)
        # the larger factor w2 is stored whole when the rank is at least half its larger side
        if rank >= max(out_big, in_big) / 2:
            names = {"lokr_w1", "lokr_w2", "alpha"}
        else:
            names = {"lokr_w1", "lokr_w2_a", "lokr_w2_b", "alpha"} | ({"lokr_t2"} if core else set())
    elif algo == "ia3":
        return {"weight", "on_input"}
    else:
        raise ValueError(algo)
    return names | ({"dora_scale"} if dora else set())


def expected_keys(algo: str, preset: str, text_encoder: nn.Module, unet: nn.Module, *, rank: int, conv_rank: int,
                  tucker: bool = False, dora: bool = False) -> set[str]:
    """Every key of a file of `algo` with `preset` on these SD1.5-layout models (the layer shapes come from them)."""
    layers = sd15_layers(preset, text_layers=len(text_encoder.get_submodule("encoder.layers")),
                         widths=tuple(unet.config.block_out_channels))
    keys: set[str] = set()
    for name, path in layers.items():
        layer = (text_encoder if name.startswith("lora_te_") else unet).get_submodule(path)
        three_by_three = isinstance(layer, nn.Conv2d) and layer.kernel_size != (1, 1)
        suffixes = tensor_names(algo, layer, rank=conv_rank if three_by_three else rank, tucker=tucker, dora=dora)
        keys |= {f"{name}.{suffix}" for suffix in suffixes}
    return keys


# --- SDXL: where A1111 and ComfyUI put each key of an SDXL LoRA in an SGM single file --------------------------------
# `lora_unet_X` -> `model.diffusion_model.<X with dots>.weight` (the file's own names with "." -> "_"),
# `lora_te1_text_model_X` -> `conditioner.embedders.0.transformer.text_model.<X>.weight`, and
# `lora_te2_text_model_encoder_layers_N_<part>` -> OpenCLIP block N of `conditioner.embedders.1.model.`: q/k/v are a
# third of the rows of `attn.in_proj_weight` each, out_proj/fc1/fc2 are `attn.out_proj`, `mlp.c_fc`, `mlp.c_proj`.
SGM_UNET = "model.diffusion_model."
SGM_TE1 = "conditioner.embedders.0.transformer.text_model."
SGM_TE2_BLOCKS = "conditioner.embedders.1.model.transformer.resblocks."
SGM_TE2_PARTS = {"self_attn_out_proj": "attn.out_proj", "mlp_fc1": "mlp.c_fc", "mlp_fc2": "mlp.c_proj"}
SGM_TE2_QKV = ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj")


def single_file_shapes(path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of a .safetensors file, from its header."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        return {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}


def sgm_file_weight(lora_name: str, shapes: dict[str, tuple[int, ...]]) -> tuple[str, tuple[int, ...]]:
    """(single-file tensor, the shape the LoRA's delta has there) for one SDXL LoRA layer; KeyError when no SDXL
    reader would find the layer."""
    import re

    for lora_prefix, file_prefix in (("lora_unet_", SGM_UNET), ("lora_te1_text_model_", SGM_TE1)):
        if lora_name.startswith(lora_prefix):
            table = {key[len(file_prefix):-len(".weight")].replace(".", "_"): key
                     for key in shapes if key.startswith(file_prefix) and key.endswith(".weight")}
            key = table[lora_name.removeprefix(lora_prefix)]
            return key, shapes[key]
    match = re.fullmatch(r"lora_te2_text_model_encoder_layers_(\d+)_(\w+)", lora_name)
    if match is None:
        raise KeyError(lora_name)
    layer, part = match.groups()
    if part in SGM_TE2_QKV:
        key = f"{SGM_TE2_BLOCKS}{layer}.attn.in_proj_weight"
        rows, columns = shapes[key]
        return key, (rows // 3, columns)
    key = f"{SGM_TE2_BLOCKS}{layer}.{SGM_TE2_PARTS[part]}.weight"
    return key, shapes[key]
