"""Structured (JSON lines) logging for the service."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

# Not extra fields: the record's own, and uvicorn's copy of its message with colour codes.
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _plain(value: object) -> str:
    """A value as one token: quoted (``repr``) if it holds spaces or control characters,
    so that a path with an encoded newline cannot start a line of its own."""
    text = str(value)
    return repr(text) if any(c.isspace() or not c.isprintable() for c in text) else text


class PlainFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``: the ``extra=`` fields too, which say
    what a line is about (request id, method, path, status; experiment id)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={_plain(v)}" for k, v in record.__dict__.items()
                         if k not in _RESERVED and not k.startswith("_"))
        if not extra:
            return line
        head, sep, tail = line.partition("\n")  # after the message, before a traceback
        return f"{head} {extra}{sep}{tail}"


# A websocket from a browser carries its API key in the query (?api_key=bsk_...), and
# uvicorn logs websocket paths with their query: keys must never reach a log file.
_KEY = re.compile(r"(api_key=)[^&\s\"']+|\bbsk_[A-Za-z0-9_-]+")


def redact(text: str) -> str:
    """``...?api_key=bsk_abc`` -> ``...?api_key=***``; a bare ``bsk_...`` -> ``bsk_***``."""
    return _KEY.sub(lambda m: f"{m.group(1)}***" if m.group(1) else "bsk_***", text)


class RedactKeys(logging.Filter):
    """Mask API keys in log messages (a handler filter: it sees every record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "api_key=" in message or "bsk_" in message:
            record.msg, record.args = redact(message), None
        for k, v in record.__dict__.items():  # the extra= fields (a path, a URL) too
            if (k not in _RESERVED and isinstance(v, str)
                    and ("api_key=" in v or "bsk_" in v)):
                record.__dict__[k] = redact(v)
        return True


def configure_logging(level: str = "info", json_lines: bool = True) -> None:
    """Send the service's and uvicorn's logs to stderr, as JSON lines or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    handler.addFilter(RedactKeys())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Access lines come from our own middleware, with the request id and duration.
    logging.getLogger("uvicorn.access").disabled = True
