"""The LoRA tools the original popups shipped beside training: resize, merge, extract, LyCORIS merge, image resize.

One module per tool, each a library function plus a command line with sd-scripts' option names
(`python -m sd_scripts.tools.resize_lora --help`). `low_rank` holds the SVD maths they share, `lora_files` the
reading and writing of LoRA files one module at a time, `cli` the command-line plumbing (progress bar, errors).
Nothing here knows of Tk or of the question flows in `questions/`.
"""
