"""microns-get: download and mirror the public MICrONS connectomics data."""

__version__ = "0.1.0"
