"""IsoKron: a governed, tamper-evident memory substrate for AI agents."""

__version__ = "0.1.0"
