"""One configuration object, from YAML + ``key.path=value`` overrides, that builds everything.

Each section (``vision``, ``regions``, ``model``, ``retrieval``, ``report``, ``app``, ``privacy``, ``train``) is a
plain mapping owned and validated by the component that reads it (``Config.section``). Paths are never hard-coded:
caches, converted weights and the knowledge store live under ``data_dir`` (``$CTSCRIBE_HOME``, default
``~/.cache/ctscribe``), never inside the package.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vision.errors import ConfigError


def _config_dir() -> Path:
    """configs/ beside the packages (source checkout, editable install), else $CTSCRIBE_CONFIG_DIR, else ./configs."""
    env = os.environ.get("CTSCRIBE_CONFIG_DIR")
    candidates = ([Path(env)] if env else []) + [Path(__file__).resolve().parent.parent / "configs",
                                                  Path.cwd() / "configs"]
    for c in candidates:
        if (c / "default.yaml").exists():
            return c
    return candidates[0]


CONFIG_DIR = _config_dir()
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


def default_data_dir() -> Path:
    env = os.environ.get("CTSCRIBE_HOME")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "ctscribe"


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. model.llm.quantization=8bit)")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
    return parts, value


@dataclass
class Config:
    raw: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def data_dir(self) -> Path:
        d = self.raw.get("data_dir")
        p = Path(str(d)).expanduser() if d else default_data_dir()
        return p

    def section(self, name: str) -> dict[str, Any]:
        sec = self.raw.get(name, {})
        if sec is None:
            return {}
        if not isinstance(sec, dict):
            raise ConfigError(f"config section {name!r} must be a mapping, got {type(sec).__name__}")
        return sec

    def get(self, dotted: str, default: Any = None) -> Any:
        cur: Any = self.raw
        for part in dotted.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return default
            cur = cur[part]
        return cur

    def with_overrides(self, overrides: Iterable[str]) -> Config:
        raw = copy.deepcopy(self.raw)
        for item in overrides:
            parts, value = _parse_override(item)
            cur = raw
            for p in parts[:-1]:
                nxt = cur.get(p)
                if nxt is None:
                    nxt = cur[p] = {}
                if not isinstance(nxt, dict):
                    raise ConfigError(f"override {item!r}: {p!r} is not a section")
                cur = nxt
            cur[parts[-1]] = value
        return Config(raw=raw, path=self.path)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.raw)


def _read_yaml(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file (see configs/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be a ctscribe config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = data.pop("extends", None)
    if base:
        if not isinstance(base, str):
            raise ConfigError(f"config file {path}: 'extends' must be one file name, got {base!r}")
        parent = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        chain = (*_chain, path.resolve())
        if parent.resolve() in chain:
            raise ConfigError(f"config file {path}: 'extends: {base}' forms a cycle; remove one of the extends lines")
        data = _deep_merge(_read_yaml(parent, chain), data)
    return data


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> Config:
    """Load a YAML config (default: ``configs/default.yaml``); ``extends: other.yaml`` inherits from another file.

    Args:
        path: YAML file; ``None`` for the embedded CPU default.
        overrides: ``section.key=value`` strings, values parsed as YAML.
    """
    p = Path(path) if path is not None else DEFAULT_CONFIG
    raw = _read_yaml(p)
    if p.resolve() != DEFAULT_CONFIG.resolve() and DEFAULT_CONFIG.exists():  # every config layers over the default
        raw = _deep_merge(_read_yaml(DEFAULT_CONFIG), raw)
    return Config(raw=raw, path=p).with_overrides(overrides)
