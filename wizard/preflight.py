"""The pre-flight report: what a training will do, shown before it starts, so surprises come before the hours.

It reads the dataset exactly as the trainer will (`sd_scripts.dataset.scan_dataset`) and counts the run as the
trainer counts it (`sd_scripts.training.length.plan_run_length` and the trainer's warmup rule), so its numbers are
the run's numbers. It adds what only a person can judge: captions that are missing or orphaned, buckets that hold
one or two images, whether the trigger word is in the captions, the memory the run needs against the GPU's free
memory, whether the installed PyTorch can use the NVIDIA GPU that is there, and the disk space. A setting that makes
training impossible becomes the report's one sentence.

`confirm_preflight` is what the wizard calls between the summary and training.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sd_scripts.args import TrainArgs
from sd_scripts.dataset import DatasetPlan, DatasetSettings, Subset, scan_dataset
from sd_scripts.dataset.plan import DatasetProblems
from sd_scripts.errors import UserFacingError
from sd_scripts.training.length import RunLength, plan_run_length
from sd_scripts.training.processes import launched_processes
from sd_scripts.training.length import resolve_warmup_steps
from sd_scripts.networks.kinds import network_type_of, parse_network_args
from sd_scripts.training.validation import (
    caches_text_encoder_outputs,
    check_input_files,
    check_output_folder,
    validate_args,
)
from wizard.askers.base import Asker, ReportAction, line_up_columns
from wizard.askers.console import ConsoleAsker
from wizard.config import TrainConfig, trains_sdxl
from wizard.model_family import found_family
from wizard.formats.files import write_text_atomically
from wizard.hardware import torch_gpu_warning
from wizard.memory_estimate import (
    GB,
    OPTIMIZER_STATE_BYTES,
    TIGHT_MEMORY_SHARE,
    GpuMemory,
    LoraShape,
    MemoryEstimate,
    SDXL,
    ModelSize,
    TrainingSetup,
    estimate_training_memory,
    model_size,
    read_gpu_memory,
)
from wizard.tag_list import count_tags
from wizard.translate import to_train_args

TITLE = "Before training starts"
REPORT_FILE = "preflight.txt"
NAMES_SHOWN = 5  # file names listed for a problem before "and N more"
TOP_TAGS = 10
FEW_IMAGES_IN_BUCKET = 2  # a bucket with this many images or fewer is flagged
LATENT_CHANNELS, LATENT_DOWNSCALE, LATENT_BYTES = 4, 8, 4  # an SD latent: 4 fp32 channels at 1/8 of the size


@dataclass(frozen=True)
class FolderCount:
    """One image folder as the trainer reads it."""

    name: str
    is_reg: bool
    repeats: int
    images: int  # readable images
    captions_found: int
    samples: int  # images x repeats used per epoch (regularization: after balancing to the training samples)
    images_without_caption: list[str]
    captions_without_image: list[str]
    unreadable_images: list[str]


@dataclass(frozen=True)
class BucketCount:
    """One training size: how many different images go there and how many samples that makes per epoch."""

    resolution: tuple[int, int]  # (width, height)
    images: int
    samples: int
    batch_size: int

    def note(self) -> str:
        """Why this bucket deserves a look, or ""."""
        if self.images <= FEW_IMAGES_IN_BUCKET:
            return f"only {_count(self.images, 'image')} at this size"
        if self.samples < self.batch_size:
            return f"fewer samples than the batch size: its batch holds only {self.samples}"
        return ""


@dataclass(frozen=True)
class TriggerCheck:
    """Whether a folder's trigger word (its class tokens) is in the captions it trains with."""

    folder: str
    trigger: str
    captions: int
    with_trigger: int
    missing_in: list[str]  # image names whose caption lacks it
    most_common_first_tag: str | None


@dataclass(frozen=True)
class DiskCheck:
    folder: Path
    free_gb: float
    needed_gb: float
    what: str  # what the space is for, in words


@dataclass
class Preflight:
    """The report's numbers (for tests and the log) and its text; `problem` is set when training cannot start."""

    problem: str | None = None
    folders: list[FolderCount] = field(default_factory=list)
    buckets: list[BucketCount] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)  # one per dataset (one unless a dataset_config says more)
    gradient_accumulation_steps: int = 1
    num_processes: int = 1  # data-parallel processes (GPUs) under accelerate launch
    num_train_samples: int = 0  # training images x repeats
    num_reg_samples: int = 0  # regularization samples per epoch, after balancing
    batches_per_epoch: int = 0
    length: RunLength | None = None
    counted_in_epochs: bool = True
    warmup_steps: int = 0
    top_tags: list[tuple[str, int]] = field(default_factory=list)
    triggers: list[TriggerCheck] = field(default_factory=list)
    model_family: str | None = None  # the base model's family as its file says, in words ("SDXL v-prediction")
    memory: MemoryEstimate | None = None
    gpu: GpuMemory | None = None
    gpu_warning: str | None = None  # an NVIDIA GPU is there, but the installed PyTorch cannot use it
    memory_advice: list[str] = field(default_factory=list)  # what to change when the run does not fit
    disks: list[DiskCheck] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def can_start(self) -> bool:
        return self.problem is None

    def text(self) -> str:
        """The report in plain words; table rows separate their cells with tabs (see `line_up_columns`)."""
        if self.problem is not None:
            return f"Training cannot start: {self.problem}"
        sections = [self._model_text()] if self.model_family else []
        sections += [self._images_text(), self._buckets_text(), self._length_text(), self._tags_text()]
        if self.gpu_warning:
            sections.append(f"PyTorch and the GPU\n{self.gpu_warning}")
        sections += [self._memory_text(), self._disk_text()]
        if self.warnings:
            sections.append("\n".join(["Warnings from reading the images"] + [f"- {w}" for w in self.warnings]))
        return "\n\n".join(sections)

    # --- the sections -------------------------------------------------------------------------------------------

    def _model_text(self) -> str:
        return f"Base model\nThe base model file is {self.model_family}."

    def _images_text(self) -> str:
        lines = ["Images and captions", "Folder\tImages\tCaptions\tRepeats\tSamples per epoch"]
        for folder in self.folders:
            name = f"{folder.name} (regularization)" if folder.is_reg else folder.name
            lines.append(f"{name}\t{folder.images}\t{folder.captions_found}\t{folder.repeats}\t{folder.samples}")
        for folder in self.folders:
            if folder.images_without_caption:
                lines.append(f"- {folder.name}: {_count(len(folder.images_without_caption), 'image')} without a "
                             f"caption file: {_names(folder.images_without_caption)}")
            if folder.captions_without_image:
                lines.append(f"- {folder.name}: {_count(len(folder.captions_without_image), 'caption file')} "
                             f"without an image (not used): {_names(folder.captions_without_image)}")
            if folder.unreadable_images:
                lines.append(f"- {folder.name}: {_count(len(folder.unreadable_images), 'image')} that cannot be "
                             f"read (skipped): {_names(folder.unreadable_images)}")
        return "\n".join(lines)

    def _buckets_text(self) -> str:
        lines = ["Training sizes (buckets)", "Size\tImages\tSamples per epoch\t"]
        for bucket in self.buckets:
            width, height = bucket.resolution
            lines.append(f"{width}x{height}\t{bucket.images}\t{bucket.samples}\t{bucket.note()}")
        if any(bucket.note() for bucket in self.buckets):
            lines.append("A size with few images gets small batches of the same pictures; crop those images to a "
                         "common shape, or ignore this if they are few on purpose.")
        return "\n".join(lines)

    def _length_text(self) -> str:
        assert self.length is not None
        length = self.length
        train_folders = [folder for folder in self.folders if not folder.is_reg]
        parts = " + ".join(f"{_count(folder.images, 'image')} x {_count(folder.repeats, 'repeat')}"
                           for folder in train_folders)
        lines = ["Length of the training", f"{parts} = {self.num_train_samples} samples per epoch."]
        samples = self.num_train_samples + self.num_reg_samples
        if self.num_reg_samples:
            lines.append(f"Regularization images are added until they match the training samples: "
                         f"{self.num_reg_samples} more, {samples} samples per epoch in all.")
        sizes = " / ".join(str(size) for size in sorted(set(self.batch_sizes)))
        batch = f"With batch size {sizes}"
        if self.batches_per_epoch == _ceil_division(samples, self.batch_sizes[0]) and len(self.batch_sizes) == 1:
            batch += f" that is {self.batches_per_epoch} batches per epoch"
        else:
            batch += (f", batched one training size at a time (so a size's last batch may be smaller), that is "
                      f"{self.batches_per_epoch} batches per epoch")
        accumulation = self.gradient_accumulation_steps
        if self.num_processes > 1:
            batch += f", shared out to {self.num_processes} processes (GPUs), {self.num_processes} batches at a time"
        if accumulation > 1:
            lines.append(f"{batch}; with gradient accumulation {accumulation}, every {accumulation} batches make one "
                         f"step: {length.steps_per_epoch} steps per epoch.")
        else:
            lines.append(f"{batch}, one step each: {length.steps_per_epoch} steps per epoch.")
        if self.counted_in_epochs:
            lines.append(f"x {_count(length.epochs, 'epoch')} = {length.total_steps} steps.")
        else:
            lines.append(f"The run is set to {length.total_steps} steps: "
                         f"{length.total_steps / length.steps_per_epoch:.1f} epochs, counted as {length.epochs}.")
        if self.warmup_steps:
            lines.append(f"Warmup: the learning rate rises from 0 over the first {self.warmup_steps} steps.")
        return "\n".join(lines)

    def _tags_text(self) -> str:
        lines = ["Captions and trigger words"]
        if self.top_tags:
            lines.append("Most used tags: " + ", ".join(f"{tag} ({count})" for tag, count in self.top_tags) + ".")
        for check in self.triggers:
            where = f"'{check.trigger}' (from the folder name {check.folder})"
            if check.with_trigger == check.captions:
                lines.append(f"Trigger word {where}: in all {check.captions} captions.")
            elif check.with_trigger:
                lines.append(f"Trigger word {where}: in {check.with_trigger} of {check.captions} captions; missing "
                             f"in {_names(check.missing_in)}.")
            else:
                first = (f" Most captions start with '{check.most_common_first_tag}': that is the word to use in "
                         "prompts." if check.most_common_first_tag else "")
                lines.append(f"The folder name '{check.trigger}' ({check.folder}) is in none of the captions, so it "
                             f"is not a trigger word (with caption files only the captions are trained).{first}")
        if len(lines) == 1:
            lines.append("The captions hold no tags.")
        return "\n".join(lines)

    def _memory_text(self) -> str:
        assert self.memory is not None
        memory = self.memory
        parts = (f"frozen model {memory.frozen_weights_gb:.1f}, LoRA and optimizer {memory.lora_training_gb:.1f}, "
                 f"activations {memory.activations_gb:.1f}, runtime {memory.runtime_gb:.1f}")
        if self.gpu is None:
            return "\n".join([
                "Memory",
                "No NVIDIA GPU was found: training runs on the CPU, which is very slow (hours where a GPU takes "
                "minutes).",
                f"It needs about {memory.total_gb:.1f} GB of system memory ({parts}; an estimate, ±30%).",
            ])
        gpu = self.gpu
        lines = ["Memory",
                 f"Estimated GPU memory: {memory.total_gb:.1f} GB ({parts}; an estimate, ±30%).",
                 f"GPU: {gpu.name}, {gpu.total_gb:.1f} GB, {gpu.free_gb:.1f} GB free."]
        if memory.total_gb > gpu.free_gb:
            lines.append("This is more than the GPU has free: the run spills into shared system memory and slows "
                         "to a crawl, or stops with an out-of-memory error.")
        elif memory.total_gb > TIGHT_MEMORY_SHARE * gpu.free_gb:
            lines.append("This is close to what the GPU has free; close other programs that use the GPU (browsers, "
                         "games) before starting.")
        else:
            lines.append("This fits.")
        if self.memory_advice and memory.total_gb > TIGHT_MEMORY_SHARE * gpu.free_gb:
            lines.append("To need less: " + "; ".join(self.memory_advice) + ".")
        return "\n".join(lines)

    def _disk_text(self) -> str:
        lines = ["Disk space"]
        for disk in self.disks:
            verdict = "enough" if disk.free_gb > disk.needed_gb else "NOT ENOUGH: free some space first"
            lines.append(f"{disk.folder}: {disk.free_gb:.1f} GB free; needed: about {_size(disk.needed_gb)} for "
                         f"{disk.what} ({verdict}).")
        return "\n".join(lines)


def preflight_report(
    config: TrainConfig, *, read_gpu: Callable[[], GpuMemory | None] = read_gpu_memory,
    check_torch: Callable[[], str | None] = torch_gpu_warning,
) -> Preflight:
    """Everything the report says about this config; a setting that cannot work gives a report with `problem`.

    `check_torch` imports torch, but only where nvidia-smi finds a GPU, that is where training follows anyway.
    """
    try:
        args = to_train_args(config)
    except UserFacingError as problem:
        return Preflight(problem=str(problem))
    plan, problem = check_before_loading(args)
    if plan is None:
        return Preflight(problem=problem)
    try:
        length = plan_run_length(plan.batches_per_epoch, args.gradient_accumulation_steps, args.max_train_steps,
                                 args.max_train_epochs, num_processes=launched_processes())
        warmup_steps = resolve_warmup_steps(args.lr_warmup_steps, length.total_steps)
        lora = _lora_shape(args)
    except UserFacingError as problem:
        return Preflight(problem=str(problem))
    gpu = read_gpu()
    size = model_size(args.pretrained_model_name_or_path, args.v2, trains_sdxl(config))
    setup = _training_setup(args, plan, lora, on_gpu=gpu is not None)
    family = found_family(args.pretrained_model_name_or_path)
    return Preflight(
        folders=[_folder_count(subset) for subset in plan.subsets],
        buckets=_bucket_counts(plan),
        batch_sizes=[dataset.params.batch_size for dataset in plan.datasets],
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        num_processes=launched_processes(),
        num_train_samples=plan.num_train_images,
        num_reg_samples=sum(image.num_repeats for image in plan.images if image.is_reg),
        batches_per_epoch=plan.batches_per_epoch,
        length=length,
        counted_in_epochs=args.max_train_epochs is not None,
        warmup_steps=warmup_steps,
        model_family=family.description if family is not None else None,
        top_tags=_top_tags(plan),
        triggers=[_trigger_check(subset) for subset in plan.subsets
                  if not subset.is_reg and subset.class_tokens and subset.images],
        memory=estimate_training_memory(setup, size),
        gpu=gpu,
        gpu_warning=check_torch(),
        memory_advice=_memory_advice(setup, sdxl=size.family == SDXL.family),
        disks=_disk_checks(args, plan, length, lora, size),
        warnings=list(plan.warnings),
    )


def check_before_loading(args: TrainArgs) -> tuple[DatasetPlan | None, str | None]:
    """The dataset plan, or every problem the settings, the model files and the dataset have, in one text.

    Each check runs even when an earlier one failed (the settings, the model and output files, the images), so
    the user meets all the mistakes at once; nothing here loads a model or writes a file."""
    problems: list[str] = []
    warnings: list[str] = []
    plan = None
    checks = [validate_args, check_output_folder]
    if args.pretrained_model_name_or_path:  # validate_args names a missing one
        checks.append(check_input_files)
    for check in checks:
        try:
            check(args)
        except UserFacingError as problem:
            problems.append(str(problem))
    try:
        if args.train_data_dir or args.dataset_config:  # validate_args names a missing one
            plan = scan_dataset(DatasetSettings.from_train_args(args))
    except DatasetProblems as found:
        problems += found.problems
        warnings = found.warnings
    except UserFacingError as problem:
        problems.append(str(problem))
    if not problems:
        return plan, None
    if len(problems) == 1 and not warnings:
        return None, problems[0]
    return None, DatasetProblems(problems, warnings).message


def confirm_preflight(config: TrainConfig, asker: Asker) -> ReportAction:
    """Show the report and return the user's choice: "start", "back" (to the settings) or "cancel".

    The text also goes to the terminal (a console asker shows it itself) and to `preflight.txt` in the output
    folder, so the log of a run says what was checked before it.
    """
    report = preflight_report(config)
    text = report.text()
    if not isinstance(asker, ConsoleAsker):
        print(f"\n{TITLE}\n\n{line_up_columns(text)}\n", flush=True)
    if report.can_start:
        save_report(line_up_columns(text), Path(config.get("output_folder")))
    return asker.report(TITLE, text, can_start=report.can_start)


def save_report(text: str, folder: Path) -> Path:
    """Write the report as `preflight.txt` (or `preflight-2.txt`, ... when an earlier one is there)."""
    folder.mkdir(parents=True, exist_ok=True)
    path, number = folder / REPORT_FILE, 1
    while path.exists():
        number += 1
        path = folder / f"{Path(REPORT_FILE).stem}-{number}.txt"
    return write_text_atomically(path, text + "\n")


# --- the numbers --------------------------------------------------------------------------------------------------


def _folder_count(subset: Subset) -> FolderCount:
    return FolderCount(
        name=subset.name,
        is_reg=subset.is_reg,
        repeats=subset.num_repeats,
        images=subset.img_count,
        captions_found=subset.captions_found,
        samples=sum(image.num_repeats for image in subset.images),
        images_without_caption=[path.name for path in subset.images_without_caption],
        captions_without_image=[path.name for path in subset.captions_without_image],
        unreadable_images=[path.name for path in subset.unreadable_images],
    )


def _bucket_counts(plan: DatasetPlan) -> list[BucketCount]:
    """Per dataset and size: the different images and the samples (images x repeats) trained there."""
    buckets = []
    for dataset in plan.datasets:
        for bucket in dataset.buckets:
            buckets.append(BucketCount(bucket.resolution, len(set(bucket.entries)), len(bucket.entries),
                                       dataset.params.batch_size))
    return buckets


def _top_tags(plan: DatasetPlan) -> list[tuple[str, int]]:
    total: Counter[str] = Counter()
    for folder in count_tags(plan).values():
        total.update(folder)
    return total.most_common(TOP_TAGS)


def _trigger_check(subset: Subset) -> TriggerCheck:
    """Is the folder's class token (its trigger word) a word of each caption the folder trains with?"""
    assert subset.class_tokens is not None
    trigger = subset.class_tokens
    pattern = re.compile(rf"(?<!\w){re.escape(trigger)}(?!\w)", re.IGNORECASE)
    missing = [image.path.name for image in subset.images if not pattern.search(image.caption)]
    first_tags = Counter(image.caption.split(",")[0].strip() for image in subset.images if image.caption.strip())
    return TriggerCheck(
        folder=subset.name,
        trigger=trigger,
        captions=len(subset.images),
        with_trigger=len(subset.images) - len(missing),
        missing_in=missing,
        most_common_first_tag=first_tags.most_common(1)[0][0] if first_tags else None,
    )


def _lora_shape(args: TrainArgs) -> LoraShape:
    options = parse_network_args(args.network_module, args.network_args)
    return LoraShape(
        network_type=network_type_of(args.network_module, args.network_args).name,
        dim=args.network_dim or 4,  # the trainer's default rank when none is given
        conv_dim=options.get("conv_dim"),
        train_unet=not args.network_train_text_encoder_only and args.unet_lr != 0,
        train_text_encoder=not args.network_train_unet_only and args.text_encoder_lr != 0,
    )


def _training_setup(args: TrainArgs, plan: DatasetPlan, lora: LoraShape, *, on_gpu: bool) -> TrainingSetup:
    """The memory-relevant settings as the trainer will run them on this machine (fp16 needs a GPU)."""
    largest = max((bucket for dataset in plan.datasets for bucket in dataset.buckets),
                  key=lambda bucket: bucket.resolution[0] * bucket.resolution[1])
    precision = args.mixed_precision if on_gpu or args.mixed_precision != "fp16" else "no"
    return TrainingSetup(
        resolution=largest.resolution,
        batch_size=max(dataset.params.batch_size for dataset in plan.datasets),
        mixed_precision=precision,
        gradient_checkpointing=args.gradient_checkpointing,
        cache_latents=args.cache_latents or args.cache_latents_to_disk,
        optimizer=_optimizer_name(args),
        lora=lora,
        on_gpu=on_gpu,
        cache_text_encoder_outputs=caches_text_encoder_outputs(args),
    )


def _optimizer_name(args: TrainArgs) -> str:
    """The optimizer's name as in OPTIMIZER_STATE_BYTES (sd-scripts accepts any letter case)."""
    by_lower = {name.lower(): name for name in OPTIMIZER_STATE_BYTES}
    return by_lower.get((args.optimizer_type or "AdamW").strip().lower(), "AdamW")


def _memory_advice(setup: TrainingSetup, *, sdxl: bool) -> list[str]:
    """The changes that lower the memory, leaving out the ones already made (SDXL: sd-scripts' 8 GB advice)."""
    advice = []
    if setup.batch_size > 1:
        advice.append("a smaller batch size")
    if not setup.gradient_checkpointing:
        advice.append("turn on gradient checkpointing")
    if not setup.cache_latents:
        advice.append("cache latents")
    if sdxl and not setup.cache_text_encoder_outputs:
        advice.append("train the U-Net only with cached text-encoder outputs")
    if setup.optimizer == "AdamW":
        advice.append("the AdamW8bit optimizer")
    if sdxl and setup.lora.dim > 8:
        advice.append("a network dim of 4 to 8")
    if max(setup.resolution) > (1024 if sdxl else 512):
        advice.append("a lower training resolution")
    return advice


def _disk_checks(args: TrainArgs, plan: DatasetPlan, length: RunLength, lora: LoraShape,
                 size: ModelSize) -> list[DiskCheck]:
    """The output folder's drive against the LoRA files (and states) to save; the latents' drive when cached to disk."""
    file_gb = lora.file_bytes(size, args.save_precision or "float") / GB
    saves = 1
    if args.save_every_n_epochs:
        epoch_saves = sum(1 for epoch in range(1, length.epochs) if epoch % args.save_every_n_epochs == 0)
        saves += min(epoch_saves, args.save_last_n_epochs or epoch_saves)
    needed = saves * file_gb
    what = f"{_count(saves, 'LoRA file')} of {_size(file_gb)}"
    if args.save_state:
        state_bytes = lora.parameters(size) * (4 + OPTIMIZER_STATE_BYTES.get(_optimizer_name(args), 8))
        needed += saves * state_bytes / GB
        what += " with their training states"
    output = Path(args.output_dir)
    checks = [DiskCheck(output, _free_gb(output), needed, what)]
    if args.cache_latents_to_disk:
        flips = 2 if args.flip_aug else 1
        latent_bytes = sum(
            LATENT_CHANNELS * (image.bucket[0] // LATENT_DOWNSCALE) * (image.bucket[1] // LATENT_DOWNSCALE)
            * LATENT_BYTES * flips for image in plan.images if image.num_repeats)
        images_folder = Path(args.train_data_dir or args.output_dir)
        checks.append(DiskCheck(images_folder, _free_gb(images_folder), latent_bytes / GB,
                                "the latents cached beside the images"))
    return checks


def _free_gb(folder: Path) -> float:
    """Free space on the drive of `folder`, or of its nearest existing parent (the folder may not exist yet)."""
    existing = folder.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free / GB


# --- words --------------------------------------------------------------------------------------------------------


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown if len(names) <= NAMES_SHOWN else f"{shown} and {len(names) - NAMES_SHOWN} more"


def _size(gb: float) -> str:
    return f"{gb:.1f} GB" if gb >= 1 else f"{max(gb * 1024, 0.1):.1f} MB"


def _ceil_division(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
