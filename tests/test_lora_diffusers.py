"""Third-party check: diffusers' own kohya loader, given our saved file, changes the outputs exactly as we do.

diffusers (`load_lora_weights`, through peft) is an independent reader of kohya files; if its U-Net and text
encoder outputs match ours to float rounding, our key names, shapes, alpha and scale mean what every reader expects.
"""

import copy

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from peft.tuners.tuners_utils import BaseTunerLayer

from sd_scripts.models.tokenizers import load_tokenizer
from sd_scripts.networks.lora import LoRANetwork
from sd_scripts.saving import save_lora
from test_lora_fixtures import randomize, tiny_text_encoder, tiny_unet, tiny_vae, token_ids, unet_inputs


def test_diffusers_load_lora_weights_gives_our_outputs(tmp_path):
    unet, text_encoder = tiny_unet(), tiny_text_encoder()
    pipeline = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=copy.deepcopy(text_encoder),
        tokenizer=load_tokenizer(v2=False),
        unet=copy.deepcopy(unet),
        scheduler=DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    network = LoRANetwork(text_encoder, unet, dim=4, alpha=2.0, conv_dim=4, conv_alpha=2.0)
    randomize(network)
    path = save_lora(network.state_dict(), tmp_path / "random.safetensors")
    latents, timesteps, context = unet_inputs()
    ids = token_ids()

    with torch.no_grad():
        base_unet = unet(latents, timesteps, context).sample
        base_text = text_encoder(ids).last_hidden_state
        network.apply_to()
        ours_unet = unet(latents, timesteps, context).sample
        ours_text = text_encoder(ids).last_hidden_state
        network.restore()
        restored_unet = unet(latents, timesteps, context).sample
        restored_text = text_encoder(ids).last_hidden_state

        pipeline.load_lora_weights(str(path))
        theirs_unet = pipeline.unet(latents, timesteps, context).sample
        theirs_text = pipeline.text_encoder(ids).last_hidden_state

    assert lora_layer_count(pipeline.unet) == len(network.unet_loras) == 277
    assert lora_layer_count(pipeline.text_encoder) == len(network.text_encoder_loras) == 12
    assert (ours_unet - base_unet).abs().max() > 0.05, "the random LoRA should change the U-Net output"
    assert (ours_text - base_text).abs().max() > 0.05, "the random LoRA should change the text encoder output"
    assert (ours_unet - theirs_unet).abs().max() < 1e-5
    assert (ours_text - theirs_text).abs().max() < 1e-5
    assert torch.equal(restored_unet, base_unet)
    assert torch.equal(restored_text, base_text)


def lora_layer_count(model: torch.nn.Module) -> int:
    return sum(isinstance(module, BaseTunerLayer) for module in model.modules())
