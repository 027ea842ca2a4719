"""ctscribe vision: CT ingestion, preprocessing, phantoms, anatomy regions, measurements, encoders.

Importing ``vision`` is light: it never imports chromadb, gradio, bitsandbytes or torch. Heavy parts import
their dependencies where used.
"""

from vision.errors import CTScribeError
from vision.registry import FINDING_NAMES, FINDINGS, REGION_KEYS, REGIONS

__all__ = ["FINDINGS", "FINDING_NAMES", "REGIONS", "REGION_KEYS", "CTScribeError", "CTVolume", "load_ct"]


def __getattr__(name: str):  # lazy re-exports so `import vision` stays cheap
    if name == "load_ct":
        from vision.io import load_ct

        return load_ct
    if name == "CTVolume":
        from vision.volume import CTVolume

        return CTVolume
    raise AttributeError(name)
