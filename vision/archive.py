"""Safe extraction of zip archives (uploads are untrusted): no path escapes, no links, no bombs.

Every entry is checked *before* anything is written: absolute names and ``..`` components (zip-slip), symbolic
links, encrypted entries, too many entries, declared size and compression ratio. While extracting, bytes are
counted again so an entry whose header lies about its size is stopped at the declared limit. The extraction folder
is a temporary directory removed when the context exits, also on error.
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from vision.errors import CorruptFileError, UnsafeArchiveError, UnsupportedFormatError

_CHUNK = 1 << 20


def check_zip(zf: zipfile.ZipFile, *, max_total_mb: float, max_ratio: float, max_entries: int = 100_000,
              name: str = "the zip file") -> list[zipfile.ZipInfo]:
    """Validate every entry of ``zf`` without extracting; return the regular-file entries.

    Raises:
        UnsafeArchiveError: zip-slip names, links, too many entries, size or ratio over the limits.
        UnsupportedFormatError: encrypted entries.
    """
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise UnsafeArchiveError(f"{name} holds {len(infos)} entries (limit {max_entries}); split it or zip only the "
                                 "CT series folder.")
    total = 0
    files: list[zipfile.ZipInfo] = []
    for info in infos:
        n = info.filename.replace("\\", "/")
        if not n:
            raise CorruptFileError(f"{name} has an entry with an empty name; the zip is damaged. Re-create it.")
        parts = PurePosixPath(n).parts
        if n.startswith("/") or (parts and ":" in parts[0]) or ".." in parts:
            raise UnsafeArchiveError(f"{name} has an entry that escapes the extraction folder ({n!r}); refusing it. "
                                     "Re-create the zip from the series folder with relative paths only.")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(f"{name} contains a symbolic link ({n!r}); links are refused in uploads. "
                                     "Zip the real files instead (e.g. `zip -r` without --symlinks).")
        if info.flag_bits & 0x1:
            raise UnsupportedFormatError(f"{name} is encrypted ({n!r}); unzip it yourself and pass the folder.")
        if info.is_dir():
            continue
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > 1 << 20 and ratio > max_ratio:
            raise UnsafeArchiveError(f"{name}: entry {n!r} expands {ratio:.0f}x (limit {max_ratio:.0f}x), which "
                                     "looks like a zip bomb; refusing it. Re-zip the original files.")
        if total > max_total_mb * 2**20:
            raise UnsafeArchiveError(f"{name} expands to more than {max_total_mb:.0f} MB (zip-bomb limit "
                                     "vision.zip_max_total_mb); pass the folder instead or raise the limit.")
        files.append(info)
    return files


@contextlib.contextmanager
def extracted_zip(path: Path, *, max_total_mb: float, max_ratio: float) -> Iterator[Path]:
    """Extract ``path`` into a fresh temporary folder and yield it; the folder is always removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="ctscribe-zip-"))
    try:
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, NotImplementedError, EOFError, ValueError) as e:  # incl. "zip file version 6.4"
            raise CorruptFileError(f"the zip file is damaged ({e}); re-create or re-download it.") from None
        with zf:
            for info in check_zip(zf, max_total_mb=max_total_mb, max_ratio=max_ratio, name=f"the zip file {path.name}"):
                target = tmp.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
                if not target.resolve().is_relative_to(tmp.resolve()):  # belt and braces after check_zip
                    raise UnsafeArchiveError(f"zip entry {info.filename!r} escapes the extraction folder; refusing.")
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_entry(zf, info, target)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Stream one entry to disk, stopping at its declared size (a lying header cannot inflate it further)."""
    limit = info.file_size
    written = 0
    try:
        with zf.open(info) as src, open(target, "wb") as dst:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise UnsafeArchiveError(f"zip entry {info.filename!r} is larger than its header says; "
                                             "refusing a possible zip bomb.")
                dst.write(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError) as e:
        # CRC errors, truncated data, zlib errors, a compression method the zipfile module does not know
        raise CorruptFileError(f"zip entry {info.filename!r} is damaged ({e}); re-create the zip.") from None
