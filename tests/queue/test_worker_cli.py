"""The ``beamsteer worker`` command line (in-process: a process costs seconds here)."""

from __future__ import annotations

from clients.cli.main import build_parser, main
from server.worker import parse_models


def test_worker_options_parse() -> None:
    args = build_parser().parse_args(
        ["worker", "--redis-url", "redis://x:6379/0", "--models", "superres,tagger=/w/t.pt",
         "--device", "cuda", "--max-batch", "8", "--max-delay-ms", "2.5", "--burst"])
    assert (args.redis_url, args.device, args.max_batch, args.max_delay_ms, args.burst) == (
        "redis://x:6379/0", "cuda", 8, 2.5, True)
    assert parse_models(args.models) == {"superres": None, "tagger": "/w/t.pt"}
    assert "superres" in parse_models("")  # default: every shipped model


def test_worker_without_redis_is_a_usage_error(monkeypatch, capsys) -> None:
    monkeypatch.delenv("BEAMSTEER_REDIS_URL", raising=False)
    assert main(["worker"]) == 2
    assert "--redis-url" in capsys.readouterr().out
