"""The examples of the README's Clients section run as written against the live server, so they stay
true: ``python`` blocks in this process, ``bash`` blocks in a shell where ``beamsteer``
is this checkout's command line; a ``yaml`` block whose first line is ``# NAME`` is
written to the file NAME first. ``console`` blocks are shown, not run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clients import Client
from tests.clients.conftest import LiveServer

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "README.md"
DOC_URL = "http://127.0.0.1:8000"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def section() -> str:
    """The README's ``## Clients`` section, up to the next ``## `` heading."""
    text = DOC.read_text()
    start = text.index("\n## Clients")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def blocks(lang: str) -> list[str]:
    return [code for kind, code in BLOCK.findall(section()) if kind == lang]


def test_the_doc_has_the_examples() -> None:
    assert len(blocks("python")) >= 4 and len(blocks("bash")) == 1


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_examples_run(live_server: LiveServer, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                      ) -> None:
    monkeypatch.chdir(tmp_path)
    for code in blocks("yaml"):
        first = code.splitlines()[0]
        assert first.startswith("# "), "a yaml block names its file on its first line"
        (tmp_path / first[2:].strip()).write_text(code)

    for i, code in enumerate(blocks("python")):
        ns: dict[str, object] = {"__name__": f"doc_example_{i}"}
        try:
            exec(compile(code.replace(DOC_URL, live_server.url), f"{DOC.name}:python[{i}]",
                         "exec"), ns)
        finally:  # what a session at the prompt would leave open
            for v in ns.values():
                if isinstance(v, Client):
                    v.close()
    out = capsys.readouterr().out
    assert "measurements[0].position.x ->" in out and "run_uid" in out
    assert "(32, 32)" in out  # the inference example ran

    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "beamsteer").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m clients.cli "$@"\n')
    (shim / "beamsteer").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    for code in blocks("bash"):
        r = subprocess.run(["bash", "-euo", "pipefail", "-c",
                            code.replace(DOC_URL, live_server.url)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "film.csv").read_text().count("scan42-pt1") == 1
