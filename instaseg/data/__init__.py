"""Datasets, transforms, converters and the data linter. See :mod:`instaseg.data.base` for the schema."""
