"""instaseg: instance segmentation from annotated data to a measured, served, exported model."""

__version__ = "0.1.0"
