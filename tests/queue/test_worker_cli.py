"""The ``beamsteer worker`` command line (in-process: a process costs seconds here)."""

from __future__ import annotations

import torch

from clients.cli.main import build_parser, main
from server.worker import parse_models, set_precision


def test_worker_options_parse() -> None:
    args = build_parser().parse_args(
        ["worker", "--redis-url", "redis://x:6379/0", "--models", "superres,tagger=/w/t.pt",
         "--device", "cuda", "--max-batch", "8", "--max-delay-ms", "2.5", "--burst"])
    assert (args.redis_url, args.device, args.max_batch, args.max_delay_ms, args.burst) == (
        "redis://x:6379/0", "cuda", 8, 2.5, True)
    assert parse_models(args.models) == {"superres": None, "tagger": "/w/t.pt"}
    assert "superres" in parse_models("")  # default: every shipped model
    assert args.allow_tf32 is False  # full float32 unless asked
    assert build_parser().parse_args(["worker", "--allow-tf32"]).allow_tf32 is True


def test_cuda_workers_compute_in_full_float32_unless_tf32_is_allowed() -> None:
    """PyTorch's default lets cuDNN use TF32 (1e-3 off the CPU's answer on an H100)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        set_precision("cpu", allow_tf32=False)  # a CPU worker leaves the process alone
        assert torch.backends.cudnn.allow_tf32 is True
        set_precision("cuda:1", allow_tf32=False)
        assert not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
        set_precision("cuda", allow_tf32=True)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_worker_without_redis_is_a_usage_error(monkeypatch, capsys) -> None:
    monkeypatch.delenv("BEAMSTEER_REDIS_URL", raising=False)
    assert main(["worker"]) == 2
    assert "--redis-url" in capsys.readouterr().out
