"""tokenize / encode_tokens: sd-scripts' 75-token windows, the SD2 EOS/PAD fix-ups, and clip_skip."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from sd_scripts.models import encode_tokens, tokenize
from sd_scripts.models.tokenizers import load_tokenizer

BOS, EOS, CAT = 49406, 49407, 2368
SD2_PAD = 0


@pytest.fixture(scope="module")
def text_encoder() -> CLIPTextModel:
    from sd_scripts.demo import tiny_sd15_model

    return tiny_sd15_model().text_encoder


def test_plain_prompts_are_one_window_of_77():
    ids = tokenize(load_tokenizer(v2=False), ["a photo of a cat", "cat"], None, v2=False)
    assert ids.shape == (2, 1, 77)
    assert ids[0, 0, :7].tolist() == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert ids[0, 0, 7:].eq(EOS).all()  # SD1 pads with EOS


def test_225_tokens_make_three_windows_with_bos_and_the_final_id():
    ids = tokenize(load_tokenizer(v2=False), ["cat " * 100], 225, v2=False)
    assert ids.shape == (1, 3, 77)
    first, second, third = ids[0].tolist()
    assert first == [BOS] + [CAT] * 75 + [EOS]  # the last id of the whole 227-token sequence (padding = EOS)
    assert second == [BOS] + [CAT] * 25 + [EOS] * 51
    assert third == [BOS] + [EOS] * 76


def test_sd2_windows_end_with_eos_and_empty_windows_start_with_eos():
    ids = tokenize(load_tokenizer(v2=True), ["cat " * 100], 225, v2=True)
    first, second, third = ids[0].tolist()
    assert first == [BOS] + [CAT] * 75 + [EOS]  # the sequence ends in PAD, but text runs on: EOS
    assert second == [BOS] + [CAT] * 25 + [EOS] + [SD2_PAD] * 50  # ends in padding: left as PAD
    assert third == [BOS, EOS] + [SD2_PAD] * 75  # starts with padding: EOS first


def test_a_too_long_prompt_is_cut_at_225_tokens():
    ids = tokenize(load_tokenizer(v2=False), ["cat " * 300], 225, v2=False)
    assert ids[0, 2].tolist() == [BOS] + [CAT] * 75 + [EOS]
    ids = tokenize(load_tokenizer(v2=False), ["cat " * 300], 150, v2=False)
    assert ids.shape == (1, 2, 77)


@torch.no_grad()
def test_windows_are_encoded_as_a_batch_and_stitched_to_n_plus_2_states(text_encoder):
    tokenizer = load_tokenizer(v2=False)
    ids = tokenize(tokenizer, ["cat " * 100, "a photo of a dog"], 225, v2=False)
    states = encode_tokens(text_encoder, ids, clip_skip=None, max_token_length=225, v2=False)
    assert states.shape == (2, 227, 32)
    windows = [text_encoder(ids[:, w]).last_hidden_state for w in range(3)]
    torch.testing.assert_close(states[:, 0], windows[0][:, 0])
    for w in range(3):
        torch.testing.assert_close(states[:, 1 + 75 * w : 76 + 75 * w], windows[w][:, 1:76])
    torch.testing.assert_close(states[:, 226], windows[2][:, 76])
    assert encode_tokens(text_encoder, ids[:, :2], clip_skip=None, max_token_length=150, v2=False).shape == (2, 152, 32)
    single = tokenize(tokenizer, ["a cat"], None, v2=False)
    assert encode_tokens(text_encoder, single, clip_skip=None, max_token_length=None, v2=False).shape == (1, 77, 32)


@torch.no_grad()
def test_clip_skip_2_is_the_encoder_without_its_last_layer(text_encoder):
    ids = tokenize(load_tokenizer(v2=False), ["a photo of a cat"], None, v2=False)
    default = encode_tokens(text_encoder, ids, clip_skip=None, max_token_length=None, v2=False)
    torch.testing.assert_close(encode_tokens(text_encoder, ids, clip_skip=1, max_token_length=None, v2=False), default)

    one_layer = CLIPTextModel(CLIPTextConfig(**{**text_encoder.config.to_dict(), "num_hidden_layers": 1})).eval()
    weights = {k: v for k, v in text_encoder.state_dict().items() if not k.startswith("encoder.layers.1.")}
    one_layer.load_state_dict(weights)
    skipped = encode_tokens(text_encoder, ids, clip_skip=2, max_token_length=None, v2=False)
    torch.testing.assert_close(skipped, one_layer(ids[:, 0]).last_hidden_state)
    assert not torch.allclose(skipped, default)


def test_unsupported_lengths_are_refused():
    with pytest.raises(ValueError):
        tokenize(load_tokenizer(v2=False), ["cat"], 100, v2=False)
