"""``ctscribe serve``: start the browser app (127.0.0.1:7860 by default), offline, from a Pipeline."""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import os
from pathlib import Path
from typing import Any

from vision.errors import ConfigError

HELP = "start the browser app (upload a CT, review the draft, chat, export); binds to 127.0.0.1 unless told"
AUTH_ENV = "CTSCRIBE_AUTH"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="interface to bind (default app.host = 127.0.0.1); any other "
                        f"host requires app.auth or ${AUTH_ENV}=user:password")
    parser.add_argument("--port", type=int, default=None, help="port (default app.port = 7860)")
    # Tests start the app on a stand-in pipeline (module:factory importable from PYTHONPATH); hidden from users.
    parser.add_argument("--pipeline", default=None, help=argparse.SUPPRESS)


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pairs(lines: list[str], where: str) -> list[tuple[str, str]]:
    out = []
    for ln in lines:
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        user, sep, pw = ln.partition(":")
        if not sep or not user or not pw:
            raise ConfigError(f"{where}: credentials must look like user:password (got a line without both)")
        out.append((user, pw))
    return out


def resolve_auth(value: Any, env: dict[str, str] | None = None) -> list[tuple[str, str]] | None:
    """Credentials from ``$CTSCRIBE_AUTH`` (user:password), else ``app.auth`` ([user, password], "user:password",
    or a path to a file of user:password lines). None when none are configured."""
    env = os.environ if env is None else env
    if env.get(AUTH_ENV):
        return _pairs([env[AUTH_ENV]], f"${AUTH_ENV}")
    if value in (None, "", []):
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        if not value[0] or not value[1]:
            raise ConfigError("app.auth must be [user, password] with both non-empty")
        return [(value[0], value[1])]
    if isinstance(value, str):
        p = Path(value).expanduser()
        if p.is_file():
            pairs = _pairs(p.read_text(encoding="utf-8").splitlines(), str(p))
            if not pairs:
                raise ConfigError(f"auth file {p} holds no user:password line")
            return pairs
        if ":" in value:
            return _pairs([value], "app.auth")
        raise ConfigError(f"app.auth {value!r} is neither user:password nor an existing file of user:password lines")
    raise ConfigError("app.auth must be [user, password], 'user:password' or a path to a file of such lines")


def serve_settings(args: argparse.Namespace, config: Any, env: dict[str, str] | None = None) -> dict[str, Any]:
    """host, port, auth, max_file_size from flags over config; refuses a public bind without credentials."""
    app = config.section("app")
    host = args.host or app.get("host") or "127.0.0.1"
    port = int(args.port or app.get("port") or 7860)
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is out of range; pass --port between 1 and 65535")
    auth = resolve_auth(app.get("auth"), env)
    if not is_loopback(host) and not auth:
        raise ConfigError(f"refusing to serve on {host} without a password: set app.auth (--set app.auth=[user,pass]"
                          f") or ${AUTH_ENV}=user:password, or bind to 127.0.0.1")
    mb = app.get("max_upload_mb") or config.get("vision.max_upload_mb") or 1024
    return {"host": host, "port": port, "auth": auth, "max_file_size": f"{int(mb)}mb"}


def load_pipeline(spec: str | None, config: Any) -> Any:
    if spec:
        mod, _, attr = spec.partition(":")
        factory = getattr(importlib.import_module(mod), attr or "Pipeline")
        return factory.from_config(config) if hasattr(factory, "from_config") else factory()
    try:
        from chatapp.pipeline import Pipeline
    except ModuleNotFoundError as e:
        if e.name == "chatapp.pipeline":
            raise ConfigError("the analysis pipeline (chatapp.pipeline) is not installed in this checkout") from None
        raise
    return Pipeline.from_config(config)


def run(args: argparse.Namespace, config: Any) -> int:
    settings = serve_settings(args, config)
    pipeline = load_pipeline(args.pipeline, config)
    from chatapp.app import build_app, launch_app

    demo = build_app(pipeline, config)
    print(f"ctscribe: serving on http://{settings['host']}:{settings['port']} (Ctrl+C to stop)", flush=True)
    launch_app(demo, **settings)
    return 0
