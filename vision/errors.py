"""The one exception family for errors a user can cause.

Every message says what is wrong *and* what to do about it. All subclasses derive from ``ValueError`` so callers
that only know the standard library still catch them; the CLI maps them to exit status 2 and a one-line message,
the app to a visible message (never a traceback).
"""

from __future__ import annotations


class CTScribeError(ValueError):
    """Base class of every user-facing ctscribe error."""


class InputNotFoundError(CTScribeError):
    """A path the user gave does not exist or holds nothing usable."""


class UnsupportedFormatError(CTScribeError):
    """The file is not a format ctscribe can read (or is a format it refuses, such as a pickle)."""


class CorruptFileError(CTScribeError):
    """The file is truncated or damaged (gzip, DICOM, NIfTI, zip)."""


class NotCTError(CTScribeError):
    """The data is not a CT (e.g. MR modality)."""


class GeometryError(CTScribeError):
    """The image geometry is unusable: 2D, 4D, absurd dimensions, uneven or missing slices, mixed matrices."""


class IntensityError(CTScribeError):
    """Voxel values are not plausible Hounsfield units (NaN/inf, unrescaled data that cannot be corrected)."""


class UnsafeArchiveError(CTScribeError):
    """A zip file tries to escape the target folder, holds links, or is a zip bomb."""


class ConfigError(CTScribeError):
    """A configuration file or override is invalid."""


class CheckpointError(CTScribeError):
    """A checkpoint is missing, incompatible or unsafe (pickles are refused)."""


class StoreError(CTScribeError):
    """The knowledge store cannot be reached or is inconsistent."""
