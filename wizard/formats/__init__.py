"""The config file formats: the wizard's own JSON (the seed project's format), Kohya_ss GUI JSON, sd-scripts TOML."""
