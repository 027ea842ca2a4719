"""Per-browser-session state for the app: the study, the editable report, the chat history and a private temp dir.

Each browser tab gets its own ``Session`` (held in a ``gr.State``, which gradio keeps per session), so one user's
study, draft and chat are never reachable from another session. Uploaded folders and exports are written under the
session's own temp dir, which is deleted when the tab closes (``gr.State(delete_callback=...)``) or when the state
expires (``time_to_live``); ``sweep_stale`` removes dirs left behind by a crashed server.
No gradio import here.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "ctscribe-session-"


def sessions_root() -> Path:
    """Where session dirs live: the system temp dir (gradio may serve files from there)."""
    return Path(tempfile.gettempdir())


@dataclass
class Session:
    """One user's working state.

    Args:
        id: random id (never derived from the data).
        dir: private temp dir for uploads and exports (mode 0700).
        study: the ``Study`` from ``Pipeline.analyze`` (None before the first upload).
        report: the editable ``Report`` (sentence statuses and texts change as the user edits).
        history: chat history as ``[{"role": "user"|"assistant", "content": str}]``.
        citations: citations of the chat so far, newest answer's first.
    """

    id: str
    dir: Path
    study: Any = None
    report: Any = None
    history: list[dict[str, str]] = field(default_factory=list)
    citations: list[Any] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)

    @classmethod
    def create(cls, root: str | Path | None = None) -> Session:
        root = Path(root) if root else sessions_root()
        root.mkdir(parents=True, exist_ok=True)
        sid = uuid.uuid4().hex
        d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{sid[:8]}-", dir=root))
        return cls(id=sid, dir=d)

    def reset(self) -> None:
        """Forget the current study (a new upload starts a new study in the same session)."""
        self.study = None
        self.report = None
        self.history = []
        self.citations = []
        for child in self.dir.iterdir() if self.dir.exists() else ():
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)

    def touch(self) -> None:
        self.last_used = time.time()

    def close(self) -> None:
        """Delete the session's files and drop references to its data."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.study = self.report = None
        self.history = []
        self.citations = []


def close_session(session: Any) -> None:
    """``gr.State`` delete callback: tolerate None and foreign values."""
    if isinstance(session, Session):
        session.close()


def sweep_stale(root: str | Path | None = None, ttl_s: float = 6 * 3600) -> int:
    """Delete session dirs under ``root`` not modified for ``ttl_s`` seconds; returns how many were removed."""
    root = Path(root) if root else sessions_root()
    now = time.time()
    n = 0
    for d in root.glob(f"{PREFIX}*"):
        try:
            if d.is_dir() and now - d.stat().st_mtime > ttl_s:
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        except OSError:
            continue
    return n
