"""The questions of the wizard, as data: one module per topic, composed here into the flows `wizard.app` walks.

"start" decides what the session does (queue, load, save); "train" fills every setting of one training, in the
order the popups of the seed tool asked them: the paths first, the model, the dataset, the network, the optimizer,
the schedule, saving and test images.
"""

from wizard.question import Question

from questions import dataset, model, network, optimizer, precision, sampling, saving, schedule, start

FLOWS: dict[str, list[Question]] = {
    "start": start.QUESTIONS,
    "train": (
        model.PATH_QUESTIONS
        + dataset.PATH_QUESTIONS
        + saving.PATH_QUESTIONS
        + model.QUESTIONS
        + dataset.QUESTIONS
        + network.QUESTIONS
        + optimizer.QUESTIONS
        + schedule.QUESTIONS
        + precision.QUESTIONS
        + saving.QUESTIONS
        + sampling.QUESTIONS
    ),
}
