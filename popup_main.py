"""Start the LoRA training wizard: `python popup_main.py` (popups) or `python popup_main.py --help` (the options).

The one place that composes the house: the questions of `questions/` are handed to the engine in `wizard/`.
"""

import sys

import questions
from wizard.app import main
from wizard.tool_flow import tool_commands

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], flows=questions.FLOWS, tools=tool_commands(questions.TOOLS)))
