"""``beamsteer db``: upgrade, current and history on a real database."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.cli.main import main
from server.store import migrate


def test_upgrade_then_current(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              caplog: pytest.LogCaptureFixture) -> None:
    data = str(tmp_path / "data")
    assert main(["db", "current", "--data-dir", data]) == 1  # no database yet
    assert "no database file yet" in capsys.readouterr().err

    head = migrate.heads()[0]
    assert main(["db", "upgrade", "--data-dir", data]) == 0
    assert f"at {head} (head)" in capsys.readouterr().out
    steps = [r.getMessage() for r in caplog.records]  # the steps that ran, nothing else
    assert all(s.startswith("Running upgrade ") for s in steps), steps
    assert steps[0].startswith(f"Running upgrade  -> {migrate.INITIAL}")
    assert steps[-1].startswith("Running upgrade ") and f"-> {head}," in steps[-1]
    caplog.clear()
    assert main(["db", "upgrade", "--data-dir", data]) == 0  # again: nothing to do
    assert caplog.records == []
    capsys.readouterr()

    url = f"sqlite:///{tmp_path / 'data' / 'beamsteer.db'}"
    assert main(["db", "current", "--database-url", url]) == 0
    assert capsys.readouterr().out.strip() == f"{url}: at {head} (head)"


def test_upgrade_and_current_on_postgres(postgres_url: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--database-url", postgres_url]) == 0
    assert main(["db", "current", "--database-url", postgres_url]) == 0
    out = capsys.readouterr().out
    assert f"at {migrate.heads()[0]} (head)" in out


def test_history_lists_the_revisions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "history"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith(f"base -> {migrate.INITIAL}") and "Initial schema" in lines[-1]
    assert f"-> {migrate.heads()[0]} (head): " in lines[0]
    assert len(lines) == len(list(
        (migrate.SCRIPT_LOCATION / "versions").glob("[0-9]*.py")))


def test_db_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["db"])
    assert exc.value.code == 2
