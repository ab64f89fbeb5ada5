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

    assert main(["db", "upgrade", "--data-dir", data]) == 0
    assert f"at {migrate.INITIAL} (head)" in capsys.readouterr().out
    assert [r.getMessage()[:20] for r in caplog.records] == [
        f"Running upgrade  -> {migrate.INITIAL}"[:20]]  # the step that ran, nothing else
    caplog.clear()
    assert main(["db", "upgrade", "--data-dir", data]) == 0  # again: nothing to do
    assert caplog.records == []
    capsys.readouterr()

    url = f"sqlite:///{tmp_path / 'data' / 'beamsteer.db'}"
    assert main(["db", "current", "--database-url", url]) == 0
    assert capsys.readouterr().out.strip() == f"{url}: at {migrate.INITIAL} (head)"


def test_upgrade_and_current_on_postgres(postgres_url: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--database-url", postgres_url]) == 0
    assert main(["db", "current", "--database-url", postgres_url]) == 0
    out = capsys.readouterr().out
    assert f"at {migrate.INITIAL} (head)" in out


def test_history_lists_the_revisions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "history"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"base -> {migrate.INITIAL} (head): Initial schema")
    assert len(lines) == len(list(
        (migrate.SCRIPT_LOCATION / "versions").glob("[0-9]*.py")))


def test_db_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["db"])
    assert exc.value.code == 2
