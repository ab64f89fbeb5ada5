"""``ServeProcess``: ``beamsteer serve`` in a child process, for benchmarks and tests."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from server.live import ServeProcess


def test_serve_process_serves_until_the_block_ends(tmp_path: Path) -> None:
    with ServeProcess(tmp_path, torch_threads=1) as server:
        r = httpx.get(f"{server.url}/health", timeout=30)
        assert r.status_code == 200 and r.json()["store"] == "sqlite"
        proc = server.proc
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None
    assert (tmp_path / "beamsteer.db").is_file() and (tmp_path / "serve.log").is_file()


def test_a_child_that_fails_to_start_raises_with_its_log(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, database_url="nonsense://nowhere")
    with pytest.raises(RuntimeError, match="exited") as info, server:
        pass
    assert "database_url must be sqlite" in str(info.value)  # the child's own words
    assert server.proc is not None and server.proc.poll() is not None


def test_a_child_that_does_not_answer_in_time_is_stopped(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, start_timeout=0.2)  # its imports alone take longer
    with pytest.raises(RuntimeError, match="did not answer /health within 0.2 s"), server:
        pass
    assert server.proc is not None and server.proc.poll() is not None
