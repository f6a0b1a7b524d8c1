"""One step over several processes (sd_scripts/training/data_parallel.py): gradients, loss and votes averaged in one
all-reduce, and nothing read back from the device unless a network trains random subsets.

Two processes are played by two threads, each with its own parameters, whose all-reduce meets at a barrier and
returns the mean of both tensors, as accelerate's `reduce(..., "mean")` does. What a process reads back from the
device is seen through a tensor subclass on the all-reduce's result that records `tolist`, `item` and conversions
to Python numbers and truth values (the host-device waits on a GPU).
"""

from __future__ import annotations

import threading

import pytest
import torch

from sd_scripts.training.data_parallel import VOTES, Votes, average_gradients

READS = (torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__)


class RecordsReads(torch.Tensor):
    """A tensor whose reads back to Python (and those of every tensor made from it) are listed, by thread."""

    reads: dict[int, list[str]] = {}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in READS:
            cls.reads.setdefault(threading.get_ident(), []).append(func.__name__)
        return super().__torch_function__(func, types, args, kwargs or {})

    @classmethod
    def made_here(cls) -> list[str]:
        """The reads this thread made since the last call."""
        return cls.reads.pop(threading.get_ident(), [])


class TwoProcesses:
    """accelerate's `reduce` between two threads: each gets the mean of both tensors."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2)
        self.sent: dict[int, torch.Tensor] = {}

    def accelerator(self, rank: int):
        processes = self

        class Accelerator:
            num_processes = 2
            process_index = rank

            @staticmethod
            def reduce(tensor: torch.Tensor, reduction: str) -> torch.Tensor:
                assert reduction == "mean"
                processes.sent[rank] = tensor.clone()
                processes.barrier.wait()
                mean = (processes.sent[0] + processes.sent[1]) / 2
                processes.barrier.wait()  # both have read before a later call overwrites
                return mean.as_subclass(RecordsReads)

        return Accelerator()


def step_on_two_processes(gradients: list[list[torch.Tensor | None]], losses: list[float],
                          votes: list[tuple[bool, bool]], *, trains_random_subsets: bool):
    """`average_gradients` on two threads; gradients[rank][i]: the i-th parameter's gradient there (None: unused).
    Returns each process's parameters, mean loss and mean votes, and the reads each made."""
    processes, results = TwoProcesses(), {}

    def run(rank: int) -> None:
        parameters = []
        for gradient in gradients[rank]:
            parameter = torch.nn.Parameter(torch.zeros(2, 3))
            parameter.grad = gradient
            parameters.append(parameter)
        RecordsReads.made_here()
        loss, mean_votes = average_gradients(processes.accelerator(rank), parameters, torch.tensor(losses[rank]),
                                             votes[rank], trains_random_subsets=trains_random_subsets)
        results[rank] = (parameters, loss.as_subclass(torch.Tensor), mean_votes.as_subclass(torch.Tensor),
                         RecordsReads.made_here())

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results[0], results[1]


def gradient(value: float) -> torch.Tensor:
    return torch.full((2, 3), value)


@pytest.mark.parametrize("trains_random_subsets", [False, True])
def test_gradients_loss_and_votes_are_the_means_of_both_processes(trains_random_subsets):
    first, second = step_on_two_processes([[gradient(1.0), gradient(-4.0)], [gradient(3.0), gradient(2.0)]],
                                          losses=[0.5, 1.5], votes=[(False, True), (True, False)],
                                          trains_random_subsets=trains_random_subsets)
    for parameters, loss, mean_votes, _ in (first, second):
        torch.testing.assert_close(parameters[0].grad.as_subclass(torch.Tensor), gradient(2.0))
        torch.testing.assert_close(parameters[1].grad.as_subclass(torch.Tensor), gradient(-1.0))
        assert loss.item() == pytest.approx(1.0)
        assert dict(zip(VOTES, mean_votes.tolist())) == {"stop": 0.5, "read_losses": 0.5}


def test_a_network_that_trains_every_layer_is_averaged_without_reading_anything_back():
    """LoRA, LoCon, LoHa, LoKr without module_dropout: every process has the same gradients missing (here the second
    parameter's, as a layer the step does not reach), so none is asked for, and nothing waits for the device."""
    first, second = step_on_two_processes([[gradient(1.0), None], [gradient(3.0), None]], losses=[1.0, 1.0],
                                          votes=[(False, False), (False, False)], trains_random_subsets=False)
    for parameters, _, _, reads in (first, second):
        assert reads == []
        torch.testing.assert_close(parameters[0].grad.as_subclass(torch.Tensor), gradient(2.0))
        assert parameters[1].grad is None  # the optimizer leaves it alone, weight decay included


def test_random_subsets_count_zeros_for_the_process_that_skipped_a_layer_and_leave_unused_layers_alone():
    """DyLoRA's block or LyCORIS' module_dropout: a parameter trained in one process only gets half its gradient
    there (DDP's mean over the processes), in both; one trained in neither keeps no gradient in either. This needs
    the flags read back: one read per step."""
    first, second = step_on_two_processes([[gradient(4.0), None, None], [None, gradient(6.0), None]],
                                          losses=[1.0, 1.0], votes=[(False, False), (False, False)],
                                          trains_random_subsets=True)
    for parameters, _, _, reads in (first, second):
        assert reads == ["tolist"]
        torch.testing.assert_close(parameters[0].grad.as_subclass(torch.Tensor), gradient(2.0))
        torch.testing.assert_close(parameters[1].grad.as_subclass(torch.Tensor), gradient(3.0))
        assert parameters[2].grad is None


def test_votes_are_decided_a_step_late_and_read_once():
    """A vote taken in step N decides at the loop's checks after step N + 1 (the GPUs finished step N by then), the
    same in every process since all hold the same all-reduced votes."""
    votes = Votes()
    assert not votes.decided("stop") and not votes.decided("read_losses")  # the run's first step
    votes.add(torch.tensor([0.5, 0.0]).as_subclass(RecordsReads))  # step 1: one process of two asked to stop
    assert not votes.decided("stop")
    RecordsReads.made_here()
    votes.add(torch.tensor([0.0, 1.0]))  # step 2
    assert votes.decided("stop") and not votes.decided("read_losses")
    assert votes.decided("stop")
    assert RecordsReads.made_here() == ["tolist"]  # one read for every check until the next step
    votes.add(torch.tensor([0.0, 0.0]))  # step 3
    assert not votes.decided("stop") and votes.decided("read_losses")


def test_the_networks_that_train_random_subsets_say_so(demo):
    """DyLoRA (one random block of ranks a step) and LyCORIS with module_dropout; LoRA, LoCon and LyCORIS without
    it train every layer every step. (tests/test_network_combinations.py checks, for every network the questions can
    produce, that no gradient goes missing in a network that does not say so.)"""
    from sd_scripts.models import load_base_model
    from sd_scripts.networks.base import NetworkSpec
    from sd_scripts.networks.factory import create_network
    from sd_scripts.networks.kinds import NETWORK_TYPES

    model = load_base_model(str(demo.model))

    def random_subsets(kind: str, **options) -> bool:
        spec = NetworkSpec(kind=NETWORK_TYPES[kind], dim=4, alpha=1.0, options=options)
        return create_network(spec, model.text_encoder, model.unet).trains_random_subsets

    assert random_subsets("DyLoRA", unit=2)
    assert random_subsets("LoHa", module_dropout=0.1) and random_subsets("IA3", module_dropout=0.5)
    assert not random_subsets("LoRA") and not random_subsets("LoCon", conv_dim=4)
    assert not random_subsets("LoKr") and not random_subsets("LyCORIS LoCon", rank_dropout=0.3)
