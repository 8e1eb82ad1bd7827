"""imgcls: train image classifiers on a folder of photos from one YAML file."""

__version__ = "0.1.0"
