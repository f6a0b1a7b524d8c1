"""Captions to UNet conditioning, as sd-scripts does it: clip_skip, and 150/225-token prompts as 75-token windows.

A prompt of `max_token_length` N (75, 150 or 225) is tokenized to N+2 ids (BOS, N tokens, EOS/padding) and cut into
N/75 windows of 77: [BOS] + 75 ids + [the last id of the full sequence]. SD2 pads with "!" (not EOS), so each SD2
window is fixed up: if its 76th id is neither EOS nor PAD the last becomes EOS, and a window that starts with PAD
starts with EOS instead. The windows are encoded as one batch and stitched back to N+2 states: window 0's BOS
state, the 75 inner states of every window, and the last window's final state (227 states for 225).

SDXL (sd-scripts' `get_hidden_states_sdxl`): both encoders' penultimate hidden states, without the final layer norm,
concatenated along the features (768 + 1280 = 2048 for the real model); the first tokenizer windows as SD1, the
second ("!"-padded) as SD2. The pooled embedding is the second encoder's final-norm state at the first EOS of the
first window, through its text projection. The size conditioning is the six numbers (original h, w, crop top,
left, target h, w) per image; the U-Net embeds them itself (diffusers' `add_time_proj`, the same sinusoids as
sd-scripts' `get_size_embeddings`).
"""

from __future__ import annotations

import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from sd_scripts.models.tokenizers import clean_caption

WINDOW = 77  # CLIP's context: BOS + 75 tokens + EOS
CLIP_EOS_ID = 49407  # "<|endoftext|>" in both SDXL vocabularies (the encoders' configs often say 2, a legacy value)
INNER = WINDOW - 2


def _window_count(max_token_length: int | None) -> int:
    if max_token_length in (None, 75):
        return 1
    if max_token_length not in (150, 225):
        raise ValueError(f"max_token_length must be None, 75, 150 or 225, not {max_token_length}")
    return max_token_length // INNER


def tokenize(tokenizer: CLIPTokenizer, captions: list[str], max_token_length: int | None, v2: bool) -> torch.LongTensor:
    """Token ids of shape [B, windows, 77] (windows = 1 for None/75, 2 for 150, 3 for 225), after CLIP's text
    clean-up (`clean_caption`), so the ids are sd-scripts'."""
    windows = _window_count(max_token_length)
    length = windows * INNER + 2
    cleaned = [clean_caption(caption) for caption in captions]
    ids = tokenizer(cleaned, padding="max_length", truncation=True, max_length=length, return_tensors="pt").input_ids
    if windows == 1:
        return ids[:, None, :]
    bos, last = ids[:, :1], ids[:, -1:]
    chunks = []
    for start in range(1, length - 1, INNER):
        chunk = torch.cat([bos, ids[:, start : start + INNER], last], dim=1)
        if v2:
            eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
            open_ended = (chunk[:, -2] != eos) & (chunk[:, -2] != pad)
            chunk[open_ended, -1] = eos
            chunk[chunk[:, 1] == pad, 1] = eos
        chunks.append(chunk)
    return torch.stack(chunks, dim=1)


def encode_tokens(
    text_encoder: CLIPTextModel,
    ids: torch.Tensor,
    *,
    clip_skip: int | None,
    max_token_length: int | None,
    v2: bool,
) -> torch.Tensor:
    """Hidden states [B, N+2, D] for ids [B, windows, 77] (77 states for one window).

    clip_skip None or 1: the encoder's output after its final layer norm; k >= 2: the k-th last layer's states
    through the final layer norm (2 = "penultimate layer", the A1111/NovelAI convention). `v2` is accepted for
    symmetry with `tokenize`: sd-scripts' SD2-only state fix-up compares an id to a string and never runs, so SD1 and
    SD2 windows are stitched the same way.
    """
    flat = _flat_windows(ids, max_token_length).to(text_encoder.device)
    if clip_skip is None or clip_skip == 1:
        states = text_encoder(flat).last_hidden_state
    else:
        hidden = text_encoder(flat, output_hidden_states=True).hidden_states[-clip_skip]
        states = text_encoder.final_layer_norm(hidden)
    return _stitch_windows(states, ids.shape[0])


def encode_sdxl_tokens(
    text_encoder: CLIPTextModel,
    text_encoder_2: CLIPTextModelWithProjection,
    ids1: torch.Tensor,
    ids2: torch.Tensor,
    *,
    max_token_length: int | None,
    eos_token_id: int = CLIP_EOS_ID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's context [B, N+2, D1+D2] and pooled embedding [B, P] for ids [B, windows, 77] of each tokenizer.

    sd-scripts takes `hidden_states[11]` of the 12-layer CLIP-L; `[-2]` is that same layer and also names the
    penultimate layer of the tiny test encoders. The pooled embedding is the first window's, as sd-scripts keeps it.
    """
    batch = ids1.shape[0]
    flat1 = _flat_windows(ids1, max_token_length).to(text_encoder.device)
    flat2 = _flat_windows(ids2, max_token_length).to(text_encoder_2.device)
    states1 = text_encoder(flat1, output_hidden_states=True).hidden_states[-2]
    output2 = text_encoder_2(flat2, output_hidden_states=True)
    states2 = output2.hidden_states[-2]
    eos = (flat2 == eos_token_id).int().argmax(dim=1)  # the first EOS (0 when none)
    final = output2.last_hidden_state[torch.arange(flat2.shape[0], device=flat2.device), eos]
    pooled = text_encoder_2.text_projection(final.to(text_encoder_2.text_projection.weight.dtype)).to(final.dtype)
    context = torch.cat([_stitch_windows(states1, batch), _stitch_windows(states2, batch)], dim=2)
    return context, pooled.reshape(batch, -1, pooled.shape[-1])[:, 0]


def sdxl_time_ids(
    original_sizes_hw: torch.Tensor, crop_top_lefts: torch.Tensor, target_sizes_hw: torch.Tensor
) -> torch.Tensor:
    """SDXL's size conditioning [B, 6] from [B, 2] each: (orig h, orig w, crop top, crop left, target h, target w)."""
    return torch.cat([original_sizes_hw, crop_top_lefts, target_sizes_hw], dim=1)


def _flat_windows(ids: torch.Tensor, max_token_length: int | None) -> torch.Tensor:
    batch, windows, _ = ids.shape
    if windows != _window_count(max_token_length):
        raise ValueError(f"{windows} token windows do not match max_token_length {max_token_length}")
    return ids.reshape(batch * windows, WINDOW)


def _stitch_windows(states: torch.Tensor, batch: int) -> torch.Tensor:
    """[B*windows, 77, D] states back to [B, N+2, D]: window 0's BOS, every window's inner 75, the last's end."""
    states = states.reshape(batch, -1, WINDOW, states.shape[-1])
    if states.shape[1] == 1:
        return states[:, 0]
    inner = states[:, :, 1:-1].reshape(batch, -1, states.shape[-1])
    return torch.cat([states[:, 0, :1], inner, states[:, -1, -1:]], dim=1)
