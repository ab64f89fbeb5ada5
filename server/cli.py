"""``beamsteer serve``: run the HTTP service (imports the server stack only when run)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(sub: Any) -> None:
    """Add ``serve`` to the ``beamsteer`` command line."""
    p = sub.add_parser(
        "serve", help="run the steering service (HTTP + websocket)",
        description="Run the Beamsteer service. Every option can also be set with a "
                    "BEAMSTEER_* environment variable (e.g. BEAMSTEER_DATABASE_URL); "
                    "options given here win.")
    p.add_argument("--host", default=None,
                   help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 8000)")
    p.add_argument("--data-dir", default=None,
                   help="directory of the embedded SQLite database (default ./data)")
    p.add_argument("--database-url", default=None,
                   help="SQLAlchemy URL instead of the embedded SQLite, e.g. "
                        "postgresql://user@host/beamsteer")
    p.add_argument("--redis-url", default=None,
                   help="Redis for the inference queue shared with GPU workers, e.g. "
                        "redis://localhost:6379/0 (default: the in-process queue)")
    p.add_argument("--log-level", default=None,
                   choices=["debug", "info", "warning", "error"], help="log level (default info)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="allow a --host beyond loopback while no API key exists (anyone "
                        "who reaches the port may do everything); without it such a "
                        "server refuses to start")
    p.add_argument("--plain-logs", action="store_true",
                   help="human-readable log lines instead of JSON")
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    """Start uvicorn with the app built from settings + command-line overrides."""
    for opt, env in (("host", "HOST"), ("port", "PORT"), ("data_dir", "DATA_DIR"),
                     ("database_url", "DATABASE_URL"), ("redis_url", "REDIS_URL"),
                     ("log_level", "LOG_LEVEL")):
        value = getattr(args, opt)
        if value is not None:
            os.environ[f"BEAMSTEER_{env}"] = str(value)
    if args.plain_logs:
        os.environ["BEAMSTEER_LOG_JSON"] = "false"
    if args.insecure:
        os.environ["BEAMSTEER_INSECURE"] = "true"

    from server.settings import Settings

    settings = Settings()
    if settings.exposed and not settings.insecure and not _any_key(settings.store_url):
        print(f"beamsteer serve: refusing to listen on {settings.host} with no API keys: "
              "anyone who reaches the port could steer every experiment. Create a key "
              "first (beamsteer keys create --name NAME --scope admin), bind to 127.0.0.1, "
              "or pass --insecure (BEAMSTEER_INSECURE=true) on a network you trust.",
              file=sys.stderr)
        return 2

    import uvicorn

    from server.app import create_app
    from server.logs import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                log_level=settings.log_level, ws="websockets-sansio")
    return 0


def _any_key(store_url: str) -> bool:
    """Whether the store holds a key that is not revoked (opens only the store: checked
    before the service stack, torch included, is imported)."""
    from server.store.base import open_store

    store = open_store(store_url)
    try:
        return store.keys.count_unrevoked_keys() > 0
    finally:
        store.close()
