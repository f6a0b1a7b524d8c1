"""The long-run benchmark's account of what a run must leave in its output folder (sd-scripts' saving rules).

The benchmark itself (`python -m benchmarks.long_run`) trains for minutes and is not a test; these check the
function it judges the folder with, on folders made by hand.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.long_run import STATE_FILES, expected_outputs, output_differences
from sd_scripts.args import TrainArgs

ARGS = TrainArgs(output_name="run", save_every_n_epochs=2, save_last_n_epochs=2, save_state=True,
                 sample_prompts="prompts.txt", sample_every_n_epochs=4)


def test_the_kept_saves_their_states_and_the_samples_follow_the_settings():
    expected = expected_outputs(ARGS, epochs=10, prompts=2, settings_file="run.json")
    # saves after epochs 2, 4, 6 and 8 (the final file is epoch 10's); save_last_n_epochs=2 keeps 6 and 8, and
    # sd-scripts removes a save's state with it when save_last_n_epochs_state is not given
    assert expected.names == {"run-000006.safetensors", "run-000008.safetensors", "run.safetensors",
                              "run-000006-state", "run-000008-state", "run-state", "run-loss.csv", "run-loss.png",
                              "sample", "run.json"}
    assert expected.states == {"run-000006-state", "run-000008-state", "run-state"}
    assert expected.samples == {("e000004", 0), ("e000004", 1), ("e000008", 0), ("e000008", 1)}


def make_folder(folder: Path, names: set[str]) -> None:
    (folder / "sample").mkdir()
    for name in names - {"sample"}:
        if name.endswith("-state"):
            (folder / name).mkdir()
            for file_name in STATE_FILES:
                (folder / name / file_name).write_bytes(b"")
        else:
            (folder / name).write_bytes(b"")
    for label in ("e000004", "e000008"):
        for index in (0, 1):
            (folder / "sample" / f"run_20261202003000_{label}_{index:02d}_{index + 1}.png").write_bytes(b"")


def test_every_difference_from_the_settings_is_named(tmp_path: Path):
    expected = expected_outputs(ARGS, epochs=10, prompts=2, settings_file="run.json")
    make_folder(tmp_path, set(expected.names))
    assert output_differences(tmp_path, "run", expected) == []

    (tmp_path / "run-000004-state").mkdir()  # an old save's state left behind
    (tmp_path / "run-000008-state" / "optimizer.pt").unlink()
    (tmp_path / "run-loss.png").unlink()
    (tmp_path / "sample" / "run_20261202003000_e000008_01_2.png").unlink()
    assert output_differences(tmp_path, "run", expected) == [
        "missing: run-loss.png",
        "not asked for: run-000004-state",
        "sample missing: e000008 prompt 1",
        f"run-000008-state holds {sorted(STATE_FILES - {'optimizer.pt'})}, not {sorted(STATE_FILES)}"]
