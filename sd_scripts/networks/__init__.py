"""The trainable networks that sit on top of a frozen base model (kohya LoRA / LoCon in `lora.py`).

Nothing is imported here so that `import sd_scripts.networks` stays free of torch until a network is built.
"""
