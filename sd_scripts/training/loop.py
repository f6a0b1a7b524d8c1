"""One training run from start to end: build the parts, then step through the epochs, saving and reporting.

`TrainingSession.__init__` loads and builds everything in the order sd-scripts does; `TrainingSession.run` is the loop.

What a seed reproduces: this trainer's own run. The same seed, settings, images, software and device give the same
LoRA file, because every random draw (initial weights, batch order, augmentations, noise, timesteps) comes from a
generator seeded with it. The LoRA's initial weights are drawn from torch's generator seeded afresh with the seed
right before the network is built, as sd-scripts' LoRANetwork draws them: module after module, each layer's default
init and then Kaiming-uniform (a=sqrt(5)) on lora_down, zeros on lora_up. A seed does not reproduce a sd-scripts run,
not even its step 0: sd-scripts builds its own U-Net, VAE and text encoder copies with random initial weights from
that same generator after set_seed (and samples cached latents from it on a CPU) before it creates the LoRA, so its
draws start elsewhere; its U-Net copy also lists each transformer block's feed-forward layer before the
cross-attention, and its noise and batch order come from other generators.

Each optimizer step is `gradient_accumulation_steps` data batches; every step checks the stop flag and reports a
`Step` event (on a GPU the events of a few steps come together, when their losses are read back: see
`loss_readback`). `sd_scripts.train.train` wraps this with error handling.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import shutil
import threading
import time
from pathlib import Path

import torch
from accelerate.utils import set_seed

from sd_scripts.args import TrainArgs
from sd_scripts.dataset.batches import Batch
from sd_scripts.dataset.epochs import BatchSpec, epoch_batches, process_rounds
from sd_scripts.dataset.latent_cache import cache_latents
from sd_scripts.dataset.loader import BatchLoader
from sd_scripts.dataset.plan import scan_dataset
from sd_scripts.dataset.settings import DatasetSettings
from sd_scripts.dataset.text_encoder_cache import (
    TextEncoderCache,
    cache_text_encoder_outputs,
    ensure_text_encoder_outputs_cacheable,
)
from sd_scripts.errors import UserFacingError
from sd_scripts.events import EpochEnd, EventHandler, Finished, SampleMade, Saved, Started, Step, ignore_event
from sd_scripts.models import load_base_model
from sd_scripts.models.text_encoding import encode_sdxl_tokens, encode_tokens, sdxl_time_ids, tokenize
from sd_scripts.networks.base import Network
from sd_scripts.networks.factory import create_network, network_from_file, spec_from_args
from sd_scripts.optimizer_kinds import parse_optimizer_args, resolve_optimizer
from sd_scripts.saving import TrainingRun, model_file_metadata, save_lora, training_metadata
from sd_scripts.saving.atomic import remove_leftovers
from sd_scripts.saving.lora_file import load_lora_file
from sd_scripts.training.compilation import check_compile_backend, compiled_unet
from sd_scripts.training.data_parallel import Votes, average_gradients
from sd_scripts.training.failures import (
    FailedRun,
    NonFiniteLoss,
    is_out_of_memory,
    nan_loss_error,
    out_of_memory_error,
)
from sd_scripts.training.length import plan_run_length, resolve_warmup_steps
from sd_scripts.training.logs import open_run_logs
from sd_scripts.training.loss_readback import (
    READ_INTERVAL_S,
    LossReadback,
    PendingStep,
    skip_if_not_finite,
    skips_non_finite_steps_on_device,
)
from sd_scripts.training.noise import make_noise_scheduler
from sd_scripts.training.optimizers import build_optimizer
from sd_scripts.training.outputs import DEFAULT_OUTPUT_NAME, OutputNames, check_outputs_free
from sd_scripts.training.precision import (
    WEIGHT_DTYPES,
    configure_attention,
    create_accelerator,
    enable_gradient_checkpointing,
    freeze_base_model,
    network_cast_dtype,
    resolve_mixed_precision,
)
from sd_scripts.training.processes import announce_run
from sd_scripts.training.progress import LossAverage, StepClock
from sd_scripts.training.result import TrainResult
from sd_scripts.training.sampling import SampleSettings, generate_samples, read_prompt_file
from sd_scripts.training.schedulers import build_schedule
from sd_scripts.training.state import (
    RunPosition,
    load_training_state,
    read_position,
    read_session_id,
    restore_random_states,
    save_training_state,
    written_by_session,
)
from sd_scripts.training.step import NoiseSettings, draw_noise, unet_loss
from sd_scripts.training.transfer import to_device
from sd_scripts.training.validation import (
    caches_text_encoder_outputs,
    check_input_files,
    check_output_folder,
    check_settings_for_model,
    validate_args,
)

logger = logging.getLogger("sd_scripts.train")


class TrainingSession:
    """Everything one run needs, built once; `run()` trains and returns the result."""

    def __init__(self, args: TrainArgs, on_event: EventHandler, stop: threading.Event) -> None:
        validate_args(args)
        check_output_folder(args)  # the output folder and the files to read, not loaded yet (INPUTS, issue 13)
        check_input_files(args)
        self.notes: list[str] = []
        mixed_precision, precision_notes = resolve_mixed_precision(args.mixed_precision, torch.cuda.is_available())
        self.accelerator = create_accelerator(mixed_precision)
        # Under `accelerate launch` every process trains its share of each step; only the main one reports and
        # writes files (LoRA, state, samples, logs), the others train silently.
        self.main_process = self.accelerator.is_main_process
        self.on_event = on_event if self.main_process else ignore_event
        self.stop = stop
        # A run without a seed gets one, recorded in the metadata, so it can be repeated.
        self.args = args = dataclasses.replace(
            args,
            seed=args.seed if args.seed is not None else secrets.randbelow(2**31),
            output_name=args.output_name or DEFAULT_OUTPUT_NAME,
        )
        set_seed(args.seed)
        if args.full_fp16 or args.full_bf16:
            self.note("full_fp16/full_bf16 are not used: the LoRA weights stay in fp32, which costs little memory.")
        self.note(*precision_notes)
        self.device = self.accelerator.device
        self.weight_dtype = WEIGHT_DTYPES[mixed_precision]
        self.network_cast_dtype = network_cast_dtype(mixed_precision, compiled=args.torch_compile)

        # The dataset and the output names first: their mistakes are found without loading a large model.
        self.plan = scan_dataset(DatasetSettings.from_train_args(args))
        self.note(*self.plan.warnings)
        self.length = plan_run_length(
            self.plan.batches_per_epoch, args.gradient_accumulation_steps, args.max_train_steps, args.max_train_epochs,
            num_processes=self.accelerator.num_processes,
        )
        self.plan.max_train_steps = self.length.total_steps  # epochs may decide the length (token warmup reads it)
        if caches_text_encoder_outputs(args):
            ensure_text_encoder_outputs_cacheable(self.plan)
        self.position = RunPosition(global_step=0, epoch=1, batches_done=0, total_steps=self.length.total_steps)
        if args.resume:
            self.position = read_position(Path(args.resume))
            if self.position.total_steps != self.length.total_steps:
                raise UserFacingError(
                    f"The state in {args.resume} belongs to a run of {self.position.total_steps} steps, but these "
                    f"settings make {self.length.total_steps}; resume with the settings of the interrupted run."
                )

        self.outputs = OutputNames(Path(args.output_dir), args.output_name, args.save_model_as)
        self.written: set[Path] = set()  # files and state folders this run has saved
        self.newest_state: Path | None = None  # the LoRA whose state folder was saved last: where to continue from
        self.outputs.folder.mkdir(parents=True, exist_ok=True)
        # A resumed run is the same training session: the saves its interrupted run made after the resumed state
        # (a crash during a state save leaves the LoRA of that step) are its own, and it writes them again.
        self.session_id = (read_session_id(Path(args.resume)) if args.resume else None) or secrets.randbelow(2**32)
        planned = self.planned_outputs()
        self.own_outputs = {path for path in planned if args.resume and written_by_session(path, self.session_id)}
        if args.resume:  # the run goes on from this state: a failure names it, a Stop before the next step keeps it
            state = Path(args.resume)
            resumed = state.with_name(f"{state.name.removesuffix('-state')}.{args.save_model_as}")
            self.newest_state = resumed if resumed.is_file() else None
            at_resume = self.outputs.after_step(self.position.global_step)
            if resumed.is_file() and at_resume.resolve() == resumed.resolve():
                self.written |= {at_resume, OutputNames.state_dir(at_resume)}
        if self.main_process:  # the only one that writes
            check_outputs_free([path for path in planned if path not in self.own_outputs])
            # only now: a run refused here must not touch the temporary files of one that writes these names
            self.remove_unfinished_writes()
            announce_run(args)  # the other processes (if any) train these very settings, seed included

        if args.torch_compile:  # a backend that cannot run here is refused before the model is loaded
            self.note(*check_compile_backend(args.dynamo_backend, self.device))
        # sd-scripts' no_half_vae: the VAE stays float32 under mixed precision (SDXL's overflows in fp16).
        self.vae_dtype = torch.float32 if args.no_half_vae else self.weight_dtype
        self.model = load_base_model(
            args.pretrained_model_name_or_path,
            v2=args.v2 or None,
            v_parameterization=args.v_parameterization or None,
            vae=args.vae,
            tokenizer_cache_dir=args.tokenizer_cache_dir,
            dtype=self.weight_dtype,
            vae_dtype=self.vae_dtype,
        )
        self.note(*self.model.notes)
        self.v_parameterization = self.model.v_parameterization
        self.note(*check_settings_for_model(args, self.plan, self.model.is_sdxl, self.v_parameterization))

        self.network = self.build_network()
        self.prepare_models()
        self.build_optimizer_and_schedule()
        self.noise_scheduler = make_noise_scheduler(self.v_parameterization, args.zero_terminal_snr)
        self.noise_settings = NoiseSettings(
            v_parameterization=self.v_parameterization,
            noise_offset=args.noise_offset,
            multires_noise_iterations=args.multires_noise_iterations,
            multires_noise_discount=args.multires_noise_discount,
            min_snr_gamma=args.min_snr_gamma,
        )
        self.noise_generator = torch.Generator("cpu").manual_seed(args.seed)
        self.latent_cache = None
        self.parked: list[torch.nn.Module] = []  # modules the steps no longer need, waiting in RAM for samples
        if args.cache_latents or args.cache_latents_to_disk:
            self.latent_cache = cache_latents(self.plan, self.encode_pixels, to_disk=args.cache_latents_to_disk,
                                              vae_batch_size=args.vae_batch_size, sdxl=self.model.is_sdxl)
            self.park([self.model.vae])  # as sd-scripts moves the VAE to the CPU after caching latents
        self.text_encoder_cache = self.cache_text_encoder_outputs() if caches_text_encoder_outputs(args) else None
        self.batches = BatchLoader(self.plan, self.latent_cache, num_workers=args.max_data_loader_n_workers,
                                   persistent_workers=args.persistent_data_loader_workers,
                                   pin_memory=self.device.type == "cuda")

        self.pending_random_states = None
        if args.resume:
            self.pending_random_states = load_training_state(
                Path(args.resume), network=self.network, optimizer=self.optimizer, lr_scheduler=self.lr_scheduler
            )
            self.note(f"Resuming at step {self.position.global_step} of {self.length.total_steps} from {args.resume}.")

        self.sample_prompts = read_prompt_file(args.sample_prompts) if args.sample_prompts else []
        self.training_run = TrainingRun(
            session_id=self.session_id,
            started_at=time.time(),
            base_model_version=self.model.version,
            num_epochs=self.length.epochs,
            max_train_steps=self.length.total_steps,
            lr_warmup_steps=self.warmup_steps,
            optimizer=self.optimizer_description,
            model_files=model_file_metadata(args.pretrained_model_name_or_path, args.vae),
            v_parameterization=self.v_parameterization,
            num_processes=self.accelerator.num_processes,
        )
        self.logs = open_run_logs(args, table=self.outputs.loss_table(), plot=self.outputs.loss_plot(),
                                  network=self.network, optimizer=self.optimizer, lr_scheduler=self.lr_scheduler,
                                  resumed_at=self.position.global_step if args.resume else None,
                                  write=self.main_process)

    # --- building -----------------------------------------------------------------------------------------------
    def note(self, *notes: str) -> None:
        for note in notes:
            if self.main_process:
                logger.warning(note)
            self.notes.append(note)

    def planned_outputs(self) -> list[Path]:
        """The LoRA files (and state folders) this run will write for sure, from its start position on."""
        paths = [self.outputs.final()]
        if not self.args.resume:  # a resumed run continues the loss table and plot of the run it resumes
            paths += [self.outputs.loss_table(), self.outputs.loss_plot()]
        every = self.args.save_every_n_epochs
        if every:
            paths += [self.outputs.after_epoch(epoch) for epoch in range(self.position.epoch, self.length.epochs)
                      if epoch % every == 0]
        every = self.args.save_every_n_steps
        if every:
            paths += [self.outputs.after_step(step) for step in range(every, self.length.total_steps, every)
                      if step > self.position.global_step]
        if self.args.save_state:
            paths += [OutputNames.state_dir(path) for path in paths]
        return paths

    def build_network(self) -> Network:
        """The network the settings ask for, or the one a LoRA file to continue from describes."""
        args, model = self.args, self.model
        spec = spec_from_args(args)
        torch.manual_seed(args.seed)  # the initial weights depend on the seed alone, not on what loading drew
        if args.network_weights and args.dim_from_weights:
            network = network_from_file(args.network_weights, self.network_text_encoders(), model.unet,
                                        block_lr_options=spec.options, train_unet=spec.train_unet,
                                        train_text_encoder=spec.train_text_encoder)
            self.note(f"Continuing from the LoRA {args.network_weights}, with its own type, dims and alphas.")
        else:
            network = create_network(spec, self.network_text_encoders(), model.unet)
            if args.network_weights:
                state_dict, _ = load_lora_file(args.network_weights)
                network.load_weights(state_dict)
                self.note(f"Continuing from the LoRA {args.network_weights}.")
        network.apply_to()
        return network

    def network_text_encoders(self):
        """What the network wraps: SD1/SD2's one text encoder, or SDXL's two (named te1 and te2 in the file)."""
        return self.model.text_encoders if self.model.is_sdxl else self.model.text_encoder

    def prepare_models(self) -> None:
        """Freeze the base model in the training precision; LoRA weights stay float32 (mixed precision proper)."""
        model, args = self.model, self.args
        freeze_base_model((model.unet, *model.text_encoders), self.device, self.weight_dtype)
        freeze_base_model((model.vae,), self.device, self.vae_dtype)
        self.network.to(self.device, dtype=torch.float32)
        self.note(*configure_attention(model.unet, model.vae, xformers=args.xformers, on_cuda=self.device.type == "cuda"))
        if args.gradient_checkpointing:
            enable_gradient_checkpointing(model.unet, model.text_encoders,
                                          text_encoder_trained=bool(self.network.text_encoder_loras))
        # What the training steps call (compilation.py); samples use the U-Net as it is.
        self.training_unet = compiled_unet(model.unet, args.dynamo_backend) if args.torch_compile else model.unet

    def cache_text_encoder_outputs(self) -> TextEncoderCache:
        """Encode every caption once (text encoders frozen); on a GPU the encoders then wait in RAM."""
        args, sdxl = self.args, self.model.is_sdxl

        @torch.no_grad()
        def encode(captions: list[str]) -> tuple[torch.Tensor, ...]:
            if not sdxl:
                return (self.encode_captions(captions),)
            context, pooled = self.encode_sdxl_captions(captions)
            width = self.model.text_encoder.config.hidden_size
            return context[..., :width], context[..., width:], pooled

        cache = cache_text_encoder_outputs(
            self.plan, encode, sdxl=sdxl, to_disk=args.cache_text_encoder_outputs_to_disk,
            base_model=Path(args.pretrained_model_name_or_path).name, token_length=(args.max_token_length or 75) + 2,
            batch_size=args.train_batch_size,  # sd-scripts encodes them a dataset batch at a time
            clip_skip=None if sdxl else args.clip_skip,
        )
        self.park(self.model.text_encoders)
        return cache

    def park(self, modules: list[torch.nn.Module]) -> None:
        """On a GPU, move modules the steps no longer need to RAM (samples fetch them back for a moment)."""
        if self.device.type != "cuda":
            return
        for module in modules:
            module.to("cpu")
            self.parked.append(module)
        torch.cuda.empty_cache()

    def build_optimizer_and_schedule(self) -> None:
        args = self.args
        param_groups = self.network.prepare_optimizer_params(args.text_encoder_lr, args.unet_lr, args.learning_rate)
        if not param_groups:
            raise UserFacingError("Nothing would be trained: every part has a learning rate of 0; set a learning rate above 0.")
        self.train_text_encoder = any(parameter.requires_grad for lora in self.network.text_encoder_loras
                                      for parameter in lora.parameters())
        kind = resolve_optimizer(args.optimizer_type, args.use_8bit_adam, args.use_lion_optimizer)
        built = build_optimizer(kind, param_groups, args.learning_rate, parse_optimizer_args(args.optimizer_args))
        self.note(*built.notes)
        self.optimizer_description = built.description
        self.warmup_steps = resolve_warmup_steps(args.lr_warmup_steps, self.length.total_steps)
        scheduler, notes = build_schedule(
            built,
            args.lr_scheduler,
            learning_rate=args.learning_rate,
            warmup_steps=self.warmup_steps,
            total_steps=self.length.total_steps,
            num_cycles=args.lr_scheduler_num_cycles,
            power=args.lr_scheduler_power,
        )
        self.note(*notes)
        # The network is not wrapped in DDP: the U-Net calls its modules, never its forward, which DDP's gradient
        # hooks need; `average_gradients` syncs them instead (as sd-scripts' all_reduce_network does).
        self.optimizer = self.accelerator.prepare(built.optimizer)
        self.lr_scheduler = scheduler
        self.skips_on_device = skips_non_finite_steps_on_device(built.optimizer, self.device,
                                                                scales_gradients=self.accelerator.scaler is not None)
        self.readback = LossReadback(interval_s=READ_INTERVAL_S if self.skips_on_device else 0.0)
        self.votes = Votes()  # several processes' decisions (data_parallel.py)
        self.epoch_loss = LossAverage()
        self.trainable_parameters = [p for group in param_groups for p in group["params"]]

    # --- one step -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """VAE latents: a sample of the latent distribution, as sd-scripts caches them (not yet scaled)."""
        return self.model.vae.encode(pixels.to(self.device, dtype=self.vae_dtype)).latent_dist.sample()

    def encode_captions(self, captions: list[str]) -> torch.Tensor:
        args = self.args
        ids = to_device(tokenize(self.model.tokenizer, captions, args.max_token_length, self.model.v2), self.device)
        with torch.set_grad_enabled(self.train_text_encoder), self.accelerator.autocast():
            return encode_tokens(
                self.model.text_encoder, ids, clip_skip=args.clip_skip, max_token_length=args.max_token_length,
                v2=self.model.v2,
            )

    def encode_sdxl_captions(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL's context and pooled embedding; the second tokenizer pads with "!" and is windowed as SD2's."""
        model, length = self.model, self.args.max_token_length
        ids1 = to_device(tokenize(model.tokenizer, captions, length, v2=False), self.device)
        ids2 = to_device(tokenize(model.tokenizer_2, captions, length, v2=True), self.device)
        with torch.set_grad_enabled(self.train_text_encoder), self.accelerator.autocast():
            return encode_sdxl_tokens(model.text_encoder, model.text_encoder_2, ids1, ids2, max_token_length=length,
                                      eos_token_id=model.tokenizer_2.eos_token_id)

    def sdxl_conditioning(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The context and the U-Net's added conditioning (pooled embedding, size/crop time ids) of one batch."""
        if self.text_encoder_cache is not None:
            first, second, pooled = self.text_encoder_cache.get(batch.image_indices)
            context = to_device(torch.cat([first, second], dim=-1), self.device, self.weight_dtype)
            pooled = to_device(pooled, self.device, self.weight_dtype)
        else:
            context, pooled = self.encode_sdxl_captions(batch.captions)
        time_ids = sdxl_time_ids(batch.original_sizes_hw, batch.crop_top_lefts, batch.target_sizes_hw)
        return context, {"text_embeds": pooled, "time_ids": to_device(time_ids, self.device, torch.float32)}

    def batch_loss(self, batch: Batch) -> torch.Tensor:
        """The diffusion loss of one data batch with the LoRA applied."""
        if batch.latents is not None:
            latents = to_device(batch.latents, self.device, self.weight_dtype)
        else:
            latents = self.encode_pixels(to_device(batch.pixels, self.device)).to(self.weight_dtype)
        latents = latents * self.model.vae.config.scaling_factor
        if self.model.is_sdxl:
            context, added_cond_kwargs = self.sdxl_conditioning(batch)
        elif self.text_encoder_cache is not None:
            (context,) = self.text_encoder_cache.get(batch.image_indices)
            context, added_cond_kwargs = to_device(context, self.device, self.weight_dtype), None
        else:
            context, added_cond_kwargs = self.encode_captions(batch.captions), None
        return unet_loss(
            self.training_unet,
            self.noise_scheduler,
            latents,
            context,
            batch.loss_weights,
            self.noise_generator,
            self.noise_settings,
            self.accelerator.autocast,
            added_cond_kwargs,
        )

    def optimizer_step(self, batches: list[Batch], rounds: list[tuple[BatchSpec, ...]] | None = None) -> torch.Tensor:
        """Accumulate the gradients of `batches` (one optimizer step's), then update; returns their mean loss.

        Each batch's loss is divided by gradient_accumulation_steps, also in an epoch's last, shorter group, as
        sd-scripts' `accelerator.accumulate` + `accelerator.backward` do: that group's step is smaller.

        With several processes, `rounds[i]` holds the i-th batch of every process (`process_rounds`). Each process
        also makes the noise draws of the others' batches, in their order, and the gradients and the loss are
        averaged over the processes: N processes give the step one process makes with gradient accumulation N
        times as large, the same noise included.

        The mean loss is returned as a tensor on the device, not read (see loss_readback): with a fused Adam/AdamW
        on a GPU a non-finite loss makes the optimizer skip the step there; otherwise the step's mean loss is read
        once every backward is queued, and a non-finite one stops the run before the optimizer steps.
        """
        losses = []
        rank = self.accelerator.process_index
        for index, batch in enumerate(batches):
            if rounds is not None:
                self.draw_noise_of(rounds[index][:rank])
            with self.network.weights_cast_once(self.network_cast_dtype):
                loss = self.batch_loss(batch)
                self.accelerator.backward(loss / self.args.gradient_accumulation_steps)
            if rounds is not None:
                self.draw_noise_of(rounds[index][rank + 1 :])
            losses.append(loss.detach())
        mean_loss = torch.stack(losses).mean()
        if self.accelerator.num_processes > 1:
            mean_loss, votes = average_gradients(
                self.accelerator, self.trainable_parameters, mean_loss,
                (self.stop.is_set(), self.main_process and self.readback.due()),
                trains_random_subsets=self.network.trains_random_subsets,
            )
            self.votes.add(votes)
        # Read once the backwards are queued (not between a forward and its backward, which would leave the GPU
        # idle while the backward is launched), before the optimizer steps; with several processes the mean, so
        # that all of them stop at the same step.
        if not self.skips_on_device and not math.isfinite(mean_loss.item()):
            raise NonFiniteLoss(self.position.global_step + 1)
        if self.skips_on_device:
            skip_if_not_finite(self.optimizer.optimizer, mean_loss)
        if self.args.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.trainable_parameters, self.args.max_grad_norm)
        self.optimizer.step()
        if not self.optimizer.step_was_skipped:  # fp16: a step with overflowing gradients is skipped, keep the schedule
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return mean_loss

    def draw_noise_of(self, specs: tuple[BatchSpec, ...]) -> None:
        """The noise and timestep draws of batches other processes train, made and dropped (see optimizer_step)."""
        vae = self.model.vae.config
        scale = 2 ** (len(vae.block_out_channels) - 1)  # the VAE's downsampling from pixels to latents
        for spec in specs:
            width, height = spec.resolution
            latents = torch.empty(len(spec.images), vae.latent_channels, height // scale, width // scale)
            draw_noise(latents, self.noise_scheduler, self.noise_generator, self.noise_settings)

    def stop_requested(self) -> bool:
        """The stop flag; with several processes, set on any (the main one's window) it stops all at the same step,
        two steps later (data_parallel.py)."""
        if self.accelerator.num_processes == 1:
            return self.stop.is_set()
        return self.votes.decided("stop")

    def losses_due(self) -> bool:
        """Time to read the queued steps' losses back; with several processes all read at the same step, as the main
        one's clock said two steps before (a non-finite loss then stops them all at the same step)."""
        if self.accelerator.num_processes == 1:
            return self.readback.due()
        return self.votes.decided("read_losses")

    # --- the loop -----------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        try:
            return self.train_epochs()
        except NonFiniteLoss as error:
            raise self.failed(nan_loss_error(error.step, self.model.is_sdxl and self.vae_dtype == torch.float16),
                              keep_learned=True) from None
        except UserFacingError as error:  # e.g. a full disk while saving: the earlier saves stay, say where
            raise self.failed(error, keep_learned=False) from None
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            raise self.failed(out_of_memory_error(error, self.args, self.position.global_step + 1),
                              keep_learned=True) from None
        finally:
            self.batches.close()
            self.logs.close()

    def train_epochs(self) -> TrainResult:
        args, length, position = self.args, self.length, self.position
        self.on_event(Started(
            total_steps=length.total_steps,
            steps_per_epoch=length.steps_per_epoch,
            epochs=length.epochs,
            num_train_images=self.plan.num_train_images,
            num_reg_images=self.plan.num_reg_images,
            device=_describe(self.device, self.accelerator.num_processes),
        ))
        clock = StepClock(total_steps=length.total_steps, first_step=position.global_step)
        self.network.train()  # DyLoRA's random rank and the dropouts act in training mode only
        self.optimizer.train()  # schedule-free optimizers step in train mode (a no-op for the others)
        if args.sample_at_first and position.global_step == 0:
            self.make_samples("e000000")  # sd-scripts samples at first as epoch 0
        accumulation = args.gradient_accumulation_steps
        for epoch in range(position.epoch, length.epochs + 1):
            rounds = process_rounds(epoch_batches(self.plan, epoch), self.accelerator.num_processes)
            batch_specs = [batches[self.accelerator.process_index] for batches in rounds]  # this process's share
            if self.pending_random_states is not None:
                # After the epoch's batch order is drawn, exactly as the interrupted run was at that point.
                restore_random_states(self.pending_random_states, self.noise_generator)
                self.pending_random_states = None
            first = position.batches_done if epoch == position.epoch else 0
            groups = self.batches.epoch(epoch, batch_specs, first=first, first_step=position.global_step,
                                        accumulation=accumulation)
            self.epoch_loss = LossAverage()
            for start in range(first, len(batch_specs), accumulation):
                position.epoch, position.batches_done = epoch, start
                if self.stop_requested():
                    return self.stop_early(clock)
                loss = self.optimizer_step(next(groups), rounds[start : start + accumulation])
                position.global_step += 1
                position.batches_done = min(start + accumulation, len(batch_specs))
                step = position.global_step
                self.readback.add(PendingStep(
                    step=step,
                    epoch=epoch,
                    loss=loss,
                    lr=self.lr_scheduler.get_last_lr()[0],
                    steps_per_second=clock.steps_per_second(step),
                    elapsed_s=clock.elapsed(),
                    eta_s=clock.eta(step),
                ))
                # sd-scripts samples after every step before it checks for the end, so the last step's too
                sample = (not args.sample_every_n_epochs and args.sample_every_n_steps
                          and step % args.sample_every_n_steps == 0)
                save = step < length.total_steps and args.save_every_n_steps and step % args.save_every_n_steps == 0
                if sample or save or self.losses_due():  # the last step's are read after the loop
                    self.report_steps()
                if sample:
                    self.make_samples(f"{step:06d}")
                if step >= length.total_steps:
                    break
                if save:
                    self.save(self.outputs.after_step(step), epoch, final=False)
            self.report_steps()
            epoch_end = EpochEnd(epoch=epoch, epochs=length.epochs, average_loss=self.epoch_loss.mean())
            self.on_event(epoch_end)
            self.logs.record_epoch(epoch_end)
            position.epoch, position.batches_done = epoch + 1, 0
            last_epoch = epoch == length.epochs or position.global_step >= length.total_steps
            if last_epoch:
                final = self.save(self.outputs.final(), epoch, final=True)
            elif args.save_every_n_epochs and epoch % args.save_every_n_epochs == 0:
                self.save(self.outputs.after_epoch(epoch), epoch, final=False)
                self.remove_old_epoch_save(epoch)
            if args.sample_every_n_epochs and epoch % args.sample_every_n_epochs == 0:
                self.make_samples(f"e{epoch:06d}")
            if last_epoch:
                break
        self.on_event(Finished(str(final), position.global_step, length.epochs, clock.elapsed(), stopped_early=False,
                               loss_plot=str(self.logs.finish())))
        return TrainResult(
            ok=True,
            lora_path=str(final),
            message=f"The training finished after {position.global_step} steps; the LoRA is {final}.",
            steps=position.global_step,
            epochs=length.epochs,
            notes=self.notes,
        )

    def report_steps(self) -> None:
        """A Step event and a loss-table line for each step made since the last report, their losses read in one go.

        A non-finite loss stops the run at its step (the steps before it reported); that step left the weights as
        they were (see optimizer_step)."""
        length = self.length
        for pending, loss in self.readback.read():
            if not math.isfinite(loss):
                raise NonFiniteLoss(pending.step)
            stepped = Step(
                step=pending.step,
                total_steps=length.total_steps,
                epoch=pending.epoch,
                epochs=length.epochs,
                loss=loss,
                average_loss=self.epoch_loss.add(loss),
                lr=pending.lr,
                steps_per_second=pending.steps_per_second,
                elapsed_s=pending.elapsed_s,
                eta_s=pending.eta_s,
            )
            self.on_event(stepped)
            self.logs.record_step(stepped)

    def stop_early(self, clock: StepClock) -> TrainResult:
        """Save what was learned so far and a state to continue from, then report a finished, stopped run."""
        self.report_steps()
        step, epoch = self.position.global_step, min(self.position.epoch, self.length.epochs)
        path = self.save_to_continue()
        self.on_event(Finished(str(path), step, epoch, clock.elapsed(), stopped_early=True,
                               loss_plot=str(self.logs.finish())))
        return TrainResult(
            ok=True,
            lora_path=str(path),
            message=(f"The training was stopped at step {step} of {self.length.total_steps}; the LoRA so far is {path}, "
                     f"and the run can be continued from {OutputNames.state_dir(path)}."),
            steps=step,
            epochs=epoch,
            notes=self.notes,
            resume_state=str(OutputNames.state_dir(path)),
        )

    def failed(self, error: UserFacingError, *, keep_learned: bool) -> FailedRun:
        """A step failed: keep what the steps before it learned (a NaN loss or an out-of-memory error leaves the
        weights as the last complete step made them), and say first where it is and which state continues the run."""
        self.optimizer.zero_grad(set_to_none=True)  # the failed step's gradients, and their memory
        kept = None
        weights = self.network.state_dict().values()
        if keep_learned and self.position.global_step > 0 and all(torch.isfinite(tensor).all() for tensor in weights):
            kept = self.save_to_continue()
        state = OutputNames.state_dir(self.newest_state) if self.newest_state else None
        if kept is not None:
            where = (f"What was learned up to step {self.position.global_step} is kept in {kept}; the run can be "
                     f"continued from {state}.")
        elif state is not None:
            where = f"The newest save is {self.newest_state}; the run can be continued from {state}."
        else:
            where = "Nothing learned was saved before this."
        return FailedRun(error.message, f"{where} {error.advice}" if error.advice else where,
                         lora_path=kept or self.newest_state, resume_state=state)

    # --- saving and samples -------------------------------------------------------------------------------------
    def remove_unfinished_writes(self) -> None:
        """Delete what a killed run's interrupted saves of these outputs left (hidden temporary files and folders)."""
        removed = remove_leftovers(self.outputs.folder, self.outputs.output_pattern())
        removed += remove_leftovers(self.outputs.samples(), self.outputs.sample_pattern())
        if removed:
            self.note(f"Removed {len(removed)} unfinished file(s) an interrupted save had left: "
                      f"{', '.join(path.name for path in removed)}.")

    def save_to_continue(self) -> Path:
        """The LoRA so far with a state beside it, named after the step: what Stop and a failed step leave."""
        path = self.outputs.after_step(self.position.global_step)
        if path in self.written:  # save_every_n_steps saved this very step already: add the state only
            self.save_state(path)
        else:
            self.save(path, min(self.position.epoch, self.length.epochs), final=False, with_state=True)
        return path

    def save(self, path: Path, epoch: int, *, final: bool, with_state: bool | None = None) -> Path:
        """Write the LoRA with its metadata (and a resumable state when asked or when save_state is on).

        Only the main process writes; the others have the same weights."""
        if not self.main_process:
            return path
        args, step = self.args, self.position.global_step
        self.optimizer.eval()  # schedule-free: the file (and state) get the averaged weights, as sd-scripts saves
        # sd-scripts records len(train_dataloader) after accelerate shards it: one process's batches per epoch
        dataset = dict(self.plan.metadata(), ss_num_batches_per_epoch=str(math.ceil(
            self.plan.batches_per_epoch / self.accelerator.num_processes)))
        metadata = training_metadata(args, dataset, self.training_run, steps=step, epoch=epoch, saved_at=time.time())
        save_lora(self.network.state_dict(), path, save_model_as=args.save_model_as,
                  save_precision=args.save_precision, metadata=metadata, overwrite=path in self.own_outputs)
        self.written.add(path)
        self.logs.save_table()
        state_dir = self.save_state(path) if (args.save_state if with_state is None else with_state) else None
        self.optimizer.train()
        self.on_event(Saved(str(path), epoch, step, final, str(state_dir) if state_dir else None))
        return path

    def save_state(self, lora_path: Path) -> Path:
        state_dir = OutputNames.state_dir(lora_path)
        if state_dir not in self.written:
            save_training_state(
                state_dir,
                network_state=self.network.state_dict(),
                optimizer=self.optimizer,
                lr_scheduler=self.lr_scheduler,
                noise_generator=self.noise_generator,
                position=self.position,
                session_id=self.session_id,
                replace=state_dir in self.own_outputs,
            )
            self.written.add(state_dir)
        self.newest_state = lora_path
        return state_dir

    def remove_old_epoch_save(self, epoch: int) -> None:
        """save_last_n_epochs: keep only the newest N epoch saves of this run, and their states (sd-scripts removes
        old states with the saves when save_last_n_epochs_state is not given; a long run would fill the disk)."""
        keep, every = self.args.save_last_n_epochs, self.args.save_every_n_epochs
        if not keep:
            return
        old = self.outputs.after_epoch(epoch - keep * every)
        if old in self.written:
            old.unlink()
            self.written.discard(old)
        old_state = OutputNames.state_dir(old)
        if old_state in self.written:
            shutil.rmtree(old_state)
            self.written.discard(old_state)

    def make_samples(self, label: str) -> None:
        """Render the sample prompts, reporting each image as it is written; Stop ends the sampling at once (the
        image being rendered is dropped, those made stay) and the run then saves and stops as after any step."""
        if not self.sample_prompts or self.stop.is_set() or not self.main_process:
            return
        args = self.args
        shown = 0

        def report(path: Path, prompt: str) -> None:
            nonlocal shown
            sample = SampleMade(str(path), prompt, self.position.global_step)
            self.on_event(sample)
            self.logs.record_sample(sample, shown)
            shown += 1

        self.network.eval()  # samples show the whole network: full rank, no dropout
        self.optimizer.eval()  # and, with a schedule-free optimizer, its averaged weights
        for module in self.parked:
            module.to(self.device)
        try:
            generate_samples(
                self.sample_prompts,
                unet=self.model.unet,
                vae=self.model.vae,
                text_encoder=self.model.text_encoder,
                tokenizer=self.model.tokenizer,
                text_encoder_2=self.model.text_encoder_2,
                tokenizer_2=self.model.tokenizer_2,
                settings=SampleSettings(
                    sampler=args.sample_sampler,
                    v2=self.model.v2,
                    v_parameterization=self.v_parameterization,
                    clip_skip=args.clip_skip,
                    max_token_length=args.max_token_length,
                    default_seed=args.seed,
                    zero_terminal_snr=args.zero_terminal_snr,
                ),
                autocast=self.accelerator.autocast,
                folder=self.outputs.samples(),
                file_stem=f"{args.output_name}_{time.strftime('%Y%m%d%H%M%S')}_{label}",
                on_image=report,
                stop=self.stop.is_set,
            )
        finally:
            for module in self.parked:
                module.to("cpu")
            if self.parked:
                torch.cuda.empty_cache()
        self.network.train()
        self.optimizer.train()


def _describe(device: torch.device, num_processes: int = 1) -> str:
    described = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    return f"{num_processes} processes, the main one on {described}" if num_processes > 1 else described

