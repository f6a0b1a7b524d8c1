"""SDXL conditioning equals sd-scripts' formulas, recomputed here from its source (sdxl_train_util, strategy_sdxl,
strategy_base, train_util.get_hidden_states_sdxl): the two encoders' penultimate states, the pooled embedding and
the size/crop time ids with their sinusoidal embedding."""

from __future__ import annotations

import math

import pytest
import torch

from sd_scripts.models.text_encoding import encode_sdxl_tokens, sdxl_time_ids, tokenize

CAPTION = "a red circle on a white background, simple, flat colours"
LONG_CAPTION = ", ".join(f"tag{n} word{n}" for n in range(60))  # over 150 tokens: three windows for 225


def sd_scripts_windows(tokenizer, text: str, max_token_length: int | None) -> torch.Tensor:
    """strategy_base._get_input_ids: N+2 ids cut into 77-id windows, the "!"-padded tokenizer's windows fixed up."""
    length = 77 if max_token_length is None else max_token_length + 2
    ids = tokenizer(text, padding="max_length", truncation=True, max_length=length, return_tensors="pt").input_ids[0]
    if length == 77:
        return ids[None]
    windows = []
    for start in range(1, length - 77 + 2, 75):
        chunk = torch.cat([ids[:1], ids[start : start + 75], ids[-1:]])
        if tokenizer.pad_token_id != tokenizer.eos_token_id:
            if chunk[-2] != tokenizer.eos_token_id and chunk[-2] != tokenizer.pad_token_id:
                chunk[-1] = tokenizer.eos_token_id
            if chunk[1] == tokenizer.pad_token_id:
                chunk[1] = tokenizer.eos_token_id
        windows.append(chunk)
    return torch.stack(windows)


def sd_scripts_sdxl_states(model, text: str, max_token_length: int | None):
    """get_hidden_states_sdxl for one caption: states of layer 11 of 12 (the penultimate: index -2 here), te2's
    penultimate, both without the final norm, windows stitched; pool = projection of te2's output at the EOS."""
    ids1 = sd_scripts_windows(model.tokenizer, text, max_token_length)
    ids2 = sd_scripts_windows(model.tokenizer_2, text, max_token_length)
    states1 = model.text_encoder(ids1, output_hidden_states=True).hidden_states[-2]
    out2 = model.text_encoder_2(ids2, output_hidden_states=True)
    states2 = out2.hidden_states[-2]
    eos = int((ids2[0] == model.tokenizer_2.eos_token_id).nonzero()[0])  # the first window's (only) EOS
    pool = model.text_encoder_2.text_projection(out2.last_hidden_state[0, eos])

    def stitch(states: torch.Tensor) -> torch.Tensor:
        if max_token_length is None:
            return states[0]
        parts = [states[0, :1]] + [states[n, 1:76] for n in range(states.shape[0])] + [states[-1, -1:]]
        return torch.cat(parts)

    return torch.cat([stitch(states1), stitch(states2)], dim=-1), pool


@pytest.mark.parametrize("max_token_length", [None, 225])
def test_context_and_pooled_equal_sd_scripts(tiny_sdxl, max_token_length):
    captions = [CAPTION, LONG_CAPTION]
    ids1 = tokenize(tiny_sdxl.tokenizer, captions, max_token_length, v2=False)
    ids2 = tokenize(tiny_sdxl.tokenizer_2, captions, max_token_length, v2=True)
    with torch.no_grad():
        context, pooled = encode_sdxl_tokens(tiny_sdxl.text_encoder, tiny_sdxl.text_encoder_2, ids1, ids2,
                                             max_token_length=max_token_length)
        for row, caption in enumerate(captions):
            expected_context, expected_pool = sd_scripts_sdxl_states(tiny_sdxl, caption, max_token_length)
            assert context[row].shape == ((max_token_length or 75) + 2, 64)  # 32 of CLIP-L + 32 of bigG (tiny)
            torch.testing.assert_close(context[row], expected_context, rtol=0, atol=1e-6)
            torch.testing.assert_close(pooled[row], expected_pool, rtol=0, atol=1e-6)


def test_second_tokenizer_pads_with_exclamation_marks(tiny_sdxl):
    ids = tokenize(tiny_sdxl.tokenizer_2, ["a cat"], None, v2=True)[0, 0]
    eos = int((ids == 49407).nonzero()[0])
    assert ids[eos + 1 :].tolist() == [0] * (76 - eos)  # "!" is id 0
    with torch.no_grad():  # one window: the pooled output is transformers' own text_embeds (argmax id = the EOS)
        _, pooled = encode_sdxl_tokens(tiny_sdxl.text_encoder, tiny_sdxl.text_encoder_2,
                                       tokenize(tiny_sdxl.tokenizer, ["a cat"], None, v2=False), ids[None, None],
                                       max_token_length=None)
        torch.testing.assert_close(pooled[0], tiny_sdxl.text_encoder_2(ids[None]).text_embeds[0], rtol=0, atol=1e-6)


def sd_scripts_size_embeddings(original_hw, crop_tl, target_hw) -> torch.Tensor:
    """sdxl_train_util.get_size_embeddings: each of the six numbers as a 256-wide [cos | sin] timestep embedding."""
    def embed(values: torch.Tensor) -> torch.Tensor:
        half = 128
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = values.flatten()[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).reshape(values.shape[0], -1)

    return torch.cat([embed(original_hw), embed(crop_tl), embed(target_hw)], dim=1)


def test_time_ids_embed_as_sd_scripts_size_embeddings(tiny_sdxl):
    original_hw = torch.tensor([[1216, 832], [600, 900]])
    crop_tl = torch.tensor([[0, 32], [12, 0]])
    target_hw = torch.tensor([[1024, 768], [640, 960]])
    time_ids = sdxl_time_ids(original_hw, crop_tl, target_hw)
    assert time_ids.tolist() == [[1216, 832, 0, 32, 1024, 768], [600, 900, 12, 0, 640, 960]]
    # The U-Net embeds the six ids itself; its sinusoids are sd-scripts' vector after the pooled embedding.
    embedded = tiny_sdxl.unet.add_time_proj(time_ids.flatten()).reshape(2, -1)
    torch.testing.assert_close(embedded, sd_scripts_size_embeddings(original_hw, crop_tl, target_hw), rtol=0, atol=1e-5)
