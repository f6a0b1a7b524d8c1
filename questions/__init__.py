"""The questions of the wizard, as data: one module per topic, composed here into the flows `wizard.app` walks.

"what_to_do" holds the entries of the first popup (train, queue, demo, the side tools); "queue" asks for the queue's
folder; "start" holds the starter questions of a training (load saved settings, or save these ones); "retrain" asks
for the LoRA to train again like; "train" fills
every setting of one training, in the order the popups of the seed tool asked them: the paths first, the model, the
dataset, the network, the optimizer, the schedule, saving and test images.
"""

from wizard.question import Question
from wizard.tool_flow import ToolFlow

from questions import dataset, model, network, optimizer, precision, sampling, saving, schedule, start
from questions import tool_extract, tool_images, tool_merge, tool_merge_lycoris, tool_resize

FLOWS: dict[str, list[Question]] = {
    "what_to_do": start.CHOICES,
    "queue": start.QUEUE_QUESTIONS,
    "start": start.QUESTIONS,
    "retrain": start.RETRAIN_QUESTIONS,
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

# The side tools (`--tool NAME` and the first popup's entries), in the order the first popup lists them.
TOOLS: dict[str, ToolFlow] = {flow.name: flow for flow in (
    tool_resize.FLOW, tool_merge.FLOW, tool_extract.FLOW, tool_merge_lycoris.FLOW, tool_images.FLOW)}
