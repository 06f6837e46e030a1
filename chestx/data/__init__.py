"""CheXpert data: the CSV reader (``chexpert``) and a generator of CheXpert-shaped data."""

from chestx.data.chexpert import CheXpertData, read_chexpert

__all__ = ["CheXpertData", "read_chexpert"]
