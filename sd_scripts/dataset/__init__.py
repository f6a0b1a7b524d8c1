"""The trainer's dataset, read exactly as sd-scripts reads it: `N_name` folders or a dataset_config, captions,
regularization balancing, aspect-ratio buckets, caption and image augmentation, latent caching, the batches of each
epoch and the dataset's `ss_*` metadata.

Scanning (`scan_dataset`) needs no torch, so the wizard can report images, steps and buckets before training starts.
"""

from sd_scripts.dataset.batches import Batch, load_batch
from sd_scripts.dataset.buckets import make_bucket_resolutions
from sd_scripts.dataset.epochs import BatchSpec, epoch_batches
from sd_scripts.dataset.latent_cache import LatentCache, cache_latents, ensure_latents_cacheable, latents_npz_path
from sd_scripts.dataset.plan import Bucket, DatasetPlan, ImageDataset, scan_dataset
from sd_scripts.dataset.settings import DatasetParams, DatasetSettings, SubsetOptions, parse_resolution
from sd_scripts.dataset.subsets import IMAGE_EXTENSIONS, ImageRecord, Subset

__all__ = [
    "IMAGE_EXTENSIONS",
    "Batch",
    "BatchSpec",
    "Bucket",
    "DatasetParams",
    "DatasetPlan",
    "DatasetSettings",
    "ImageDataset",
    "ImageRecord",
    "LatentCache",
    "Subset",
    "SubsetOptions",
    "cache_latents",
    "ensure_latents_cacheable",
    "epoch_batches",
    "latents_npz_path",
    "load_batch",
    "make_bucket_resolutions",
    "parse_resolution",
    "scan_dataset",
]
