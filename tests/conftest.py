"""Settings every test shares: nothing may reach a model hub, and heavy tests stay polite on 2 shared cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# run_tests.sh runs two pytest-xdist workers on the 2 cores: one torch thread each (two each would keep waiting for
# each other's cores); a plain `pytest` run gets both.
os.environ.setdefault("OMP_NUM_THREADS", "1" if "PYTEST_XDIST_WORKER" in os.environ else "2")


import pytest  # noqa: E402  (after the environment is set, before anything imports torch)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The demo model and images, built once per test session: building pre-trains the tiny model (~70 s).

    The pytest-xdist workers share one build: the first to need it builds it in their session's common folder while
    the other waits on a lock, then reuses it (build_demo reuses a folder whose files match its marker). Two builds at
    once, each on its fixed two threads, took 320 s each on the 2 cores. WIZARD_TEST_DEMO_ROOT names a folder to
    keep the built demo between sessions while developing; CI leaves it unset and builds afresh."""
    from filelock import FileLock

    from sd_scripts.demo import build_demo

    kept = os.environ.get("WIZARD_TEST_DEMO_ROOT")
    if kept:
        return build_demo(kept)
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build_demo(tmp_path_factory.mktemp("demo") / "a")
    shared = tmp_path_factory.getbasetemp().parent / "shared_demo"  # one folder per session, common to the workers
    with FileLock(f"{shared}.lock"):
        return build_demo(shared)


@pytest.fixture(scope="session")
def tiny_sdxl():
    """The tiny SDXL-layout model (random, seed 0), built once per session (~3 s). Tests must not change it."""
    from sd_scripts.demo import tiny_sdxl_model

    return tiny_sdxl_model()


@pytest.fixture(scope="session")
def tiny_sdxl_files(tiny_sdxl, tmp_path_factory):
    """The tiny SDXL model written once per session as an SGM single file and as a diffusers folder:
    `(single_file, folder)`. Tests must copy them before changing them."""
    from sd_scripts.models import save_ldm_checkpoint
    from sd_scripts.models.diffusers_folder import save_diffusers_folder

    root = tmp_path_factory.mktemp("tiny_sdxl")
    save_ldm_checkpoint(tiny_sdxl, root / "tiny_sdxl.safetensors")
    save_diffusers_folder(tiny_sdxl, root / "diffusers")
    return root / "tiny_sdxl.safetensors", root / "diffusers"


@pytest.fixture(autouse=True)
def suite_threads():
    """Every test starts with the suite's thread count (above), whatever a test before it set: a worker left at two
    threads beside the other worker spins and waits for the cores (seen as one test taking minutes)."""
    import torch

    torch.set_num_threads(1 if "PYTEST_XDIST_WORKER" in os.environ else 2)


@pytest.fixture
def one_thread():
    """One torch thread for a test that trains: on 2 shared cores more threads only spin and wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
