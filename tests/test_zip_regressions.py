"""Regressions from the long fuzz run: zip structures the zipfile module rejects with untyped errors."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest

from vision.errors import CorruptFileError, CTScribeError
from vision.io import load_ct


def _zip_bytes(name: str = "a.dcm", data: bytes = b"x" * 64) -> bytearray:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(name, data)
    return bytearray(buf.getvalue())


def _set_method(raw: bytearray, method: int) -> bytearray:
    """Patch the compression method in both the local header and the central directory."""
    lh = raw.find(b"PK\x03\x04")
    struct.pack_into("<H", raw, lh + 8, method)
    cd = raw.find(b"PK\x01\x02")
    struct.pack_into("<H", raw, cd + 10, method)
    return raw


def test_unknown_compression_method_is_a_typed_error(tmp_path):
    p = tmp_path / "odd.zip"
    p.write_bytes(_set_method(_zip_bytes(), 77))
    with pytest.raises(CorruptFileError, match="damaged"):
        load_ct(p)


def test_unsupported_zip_version_is_a_typed_error(tmp_path):
    raw = _zip_bytes()
    cd = raw.find(b"PK\x01\x02")
    struct.pack_into("<H", raw, cd + 6, 64)  # "version needed to extract" 6.4
    p = tmp_path / "v64.npz"
    p.write_bytes(raw)
    with pytest.raises(CTScribeError):
        load_ct(p, spacing=(1.0, 1.0, 1.0))


def test_empty_entry_name_is_a_typed_error(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, ct=np.zeros((4, 4, 4), np.int16))
    raw = bytearray(buf.getvalue())
    cd = raw.find(b"PK\x01\x02")
    name_len = struct.unpack_from("<H", raw, cd + 28)[0]
    struct.pack_into("<H", raw, cd + 28, 0)  # central directory entry with an empty file name
    del raw[cd + 46: cd + 46 + name_len]
    eocd = raw.rfind(b"PK\x05\x06")
    size = struct.unpack_from("<I", raw, eocd + 12)[0]
    struct.pack_into("<I", raw, eocd + 12, size - name_len)
    p = tmp_path / "noname.npz"
    p.write_bytes(raw)
    with pytest.raises(CTScribeError):
        load_ct(p, spacing=(1.0, 1.0, 1.0))
