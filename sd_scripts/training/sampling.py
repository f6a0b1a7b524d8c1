"""Sample images during training, from an sd-scripts prompt file, with the LoRA being trained applied.

Prompt file: one prompt per line, `#` starts a comment line; options follow the prompt as ` --x value`:
`--n` negative prompt, `--w` width, `--h` height (rounded down to a multiple of 8, at least 64), `--d` seed,
`--l` guidance (CFG) scale, `--s` steps (1..1000). Defaults: 512x512, guidance 7.5, 30 steps.

SDXL models sample with diffusers' StableDiffusionXLPipeline, given our own prompt encoding (the training's) and the
default size conditioning (original = target = the sample's size, no crop). With zero terminal SNR the sampler gets
the rescaled schedule and "trailing" timesteps, so sampling starts from pure noise as the model was trained.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

from sd_scripts.errors import UserFacingError
from sd_scripts.models.text_encoding import encode_sdxl_tokens, encode_tokens, tokenize
from sd_scripts.saving.atomic import write_atomically
from sd_scripts.training.validation import check_zero_terminal_snr_sampler

# sd-scripts' sampler names -> (diffusers scheduler class, extra config), as its get_my_scheduler maps them.
SAMPLERS = {
    "ddim": (DDIMScheduler, {}),
    "pndm": (PNDMScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),  # needs scipy (pinned in requirements.txt)
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpm_2": (KDPM2DiscreteScheduler, {}),
    "dpm_2_a": (KDPM2AncestralDiscreteScheduler, {}),
    # diffusers refuses dpmsolver's default last step to sigma 0 ("zero"); it ends at the schedule's smallest sigma
    "dpmsolver": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpmsingle": (DPMSolverSinglestepScheduler, {}),
}


@dataclass
class SamplePrompt:
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    seed: int | None = None
    guidance_scale: float = 7.5
    steps: int = 30


def read_prompt_file(path: str | Path) -> list[SamplePrompt]:
    """Parse an sd-scripts prompt file (.txt); unknown options are ignored as sd-scripts does."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserFacingError(f"The sample prompt file {path} does not exist; choose an existing .txt file.") from None
    except UnicodeDecodeError:
        raise UserFacingError(f"The sample prompt file {path} is not UTF-8 text; save it as UTF-8 and try again.") from None
    prompts = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            prompts.append(parse_prompt_line(line))
    return prompts


def parse_prompt_line(line: str) -> SamplePrompt:
    text, *options = line.split(" --")
    sample = SamplePrompt(prompt=text.strip())
    for option in options:
        key, _, value = option.strip().partition(" ")
        value = value.strip()
        try:
            if key == "n":
                sample.negative_prompt = value
            elif key == "w":
                sample.width = max(64, int(value) - int(value) % 8)
            elif key == "h":
                sample.height = max(64, int(value) - int(value) % 8)
            elif key == "d":
                sample.seed = int(value)
            elif key == "l":
                sample.guidance_scale = float(value)
            elif key == "s":
                sample.steps = min(1000, max(1, int(value)))
        except ValueError:
            raise UserFacingError(f"In the sample prompt '{line}', --{key} needs a number; fix that line.") from None
    return sample


def sample_scheduler(sampler: str, v_parameterization: bool, zero_terminal_snr: bool = False):
    """A diffusers scheduler for sd-scripts' sampler name (`k_` aliases accepted), with SD's noise schedule."""
    name = sampler.lower().removeprefix("k_")
    if name not in SAMPLERS:
        raise UserFacingError(f"The sampler '{sampler}' is unknown; choose one of {', '.join(SAMPLERS)}.")
    scheduler_class, extra = SAMPLERS[name]
    if zero_terminal_snr:
        check_zero_terminal_snr_sampler(sampler)
        extra = extra | {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
    # SD's own scheduler settings; steps_offset only where the class has it (DPMSolverSinglestep has not)
    accepted = inspect.signature(scheduler_class.__init__).parameters
    return scheduler_class(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction" if v_parameterization else "epsilon",
        **({"steps_offset": 1} if "steps_offset" in accepted else {}),
        **({"clip_sample": False} if scheduler_class is DDIMScheduler else {}),
        **extra,
    )


@dataclass
class SampleSettings:
    sampler: str
    v2: bool
    v_parameterization: bool
    clip_skip: int | None
    max_token_length: int | None
    default_seed: int | None
    zero_terminal_snr: bool = False


def generate_samples(
    prompts: list[SamplePrompt],
    *,
    unet,
    vae,
    text_encoder,
    tokenizer,
    text_encoder_2=None,
    tokenizer_2=None,
    settings: SampleSettings,
    autocast: Callable[[], contextlib.AbstractContextManager],
    folder: Path,
    file_stem: str,
    on_image: Callable[[Path, str], None] = lambda path, prompt: None,
    stop: Callable[[], bool] = lambda: False,
) -> list[tuple[Path, str]]:
    """Render every prompt with the current (LoRA-wrapped) modules; returns (png path, prompt) pairs.

    The modules are switched to eval mode for the duration and back afterwards. A seed is taken from the prompt,
    else derived from the run's seed, so the same prompt gives comparable images through the run. `on_image` hears of
    each image as soon as it is written. When `stop()` turns true (the user pressed Stop) the image being rendered is
    abandoned at its next denoising step and never written; the images already made stay.
    """
    folder.mkdir(parents=True, exist_ok=True)
    scheduler = sample_scheduler(settings.sampler, settings.v_parameterization, settings.zero_terminal_snr)
    sdxl = text_encoder_2 is not None
    if sdxl:
        pipeline = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                             tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet,
                                             scheduler=scheduler, add_watermarker=False)
    else:
        pipeline = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipeline.set_progress_bar_config(disable=True)
    text_encoders = [text_encoder] + ([text_encoder_2] if sdxl else [])
    modes = [(module, module.training) for module in (unet, vae, *text_encoders)]
    for module, _ in modes:
        module.eval()
    made = []

    def interrupt_when_stopped(pipe, step: int, timestep, tensors: dict) -> dict:
        pipe._interrupt = pipe._interrupt or stop()  # diffusers' own way to end the denoising loop early
        return tensors

    try:
        for index, sample in enumerate(prompts):
            if stop():
                break
            seed = sample.seed if sample.seed is not None else (settings.default_seed or 0) + index
            with torch.no_grad(), autocast():
                if sdxl:
                    embeds, pooled = _encode_sdxl(sample.prompt, text_encoders, (tokenizer, tokenizer_2), settings)
                    negative, negative_pooled = _encode_sdxl(sample.negative_prompt, text_encoders,
                                                             (tokenizer, tokenizer_2), settings)
                    conditioning = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled,
                                    "negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled}
                else:
                    conditioning = {
                        "prompt_embeds": _encode(sample.prompt, text_encoder, tokenizer, settings),
                        "negative_prompt_embeds": _encode(sample.negative_prompt, text_encoder, tokenizer, settings),
                    }
                image = pipeline(
                    **conditioning,
                    width=sample.width,
                    height=sample.height,
                    num_inference_steps=sample.steps,
                    guidance_scale=sample.guidance_scale,
                    generator=torch.Generator("cpu").manual_seed(seed),
                    callback_on_step_end=interrupt_when_stopped,
                ).images[0]
            if pipeline.interrupt:  # a half-denoised picture is not a sample
                break
            path = folder / f"{file_stem}_{index:02d}_{seed}.png"
            write_atomically(path, lambda temporary, picture=image: picture.save(temporary, format="PNG"))
            made.append((path, sample.prompt))
            on_image(path, sample.prompt)
    finally:
        for module, was_training in modes:
            module.train(was_training)
    return made


def _encode(text: str, text_encoder, tokenizer, settings: SampleSettings) -> torch.Tensor:
    ids = tokenize(tokenizer, [text], settings.max_token_length, settings.v2).to(text_encoder.device)
    return encode_tokens(text_encoder, ids, clip_skip=settings.clip_skip, max_token_length=settings.max_token_length,
                         v2=settings.v2)


def _encode_sdxl(text: str, text_encoders: list, tokenizers: tuple, settings: SampleSettings):
    first, second = (tokenize(tokenizer, [text], settings.max_token_length, v2=index == 1)
                     for index, tokenizer in enumerate(tokenizers))
    return encode_sdxl_tokens(*text_encoders, first, second, max_token_length=settings.max_token_length,
                              eos_token_id=tokenizers[1].eos_token_id)
