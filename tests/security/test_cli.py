"""``beamsteer keys`` on a real database, and ``beamsteer serve``'s refusal to expose an
open server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from clients.cli.main import main
from server.security.keys import hash_secret
from server.store.base import open_store
from tests.api.conftest import SPEC

ROOT = Path(__file__).resolve().parents[2]


def test_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["keys", "create", "--name", "beamline 7", "--scope", "read",
                 "--scope", "write:measurements", "--expires", "30d", *data]) == 0
    out = capsys.readouterr()
    secret = out.out.strip()  # the key alone on stdout: KEY=$(beamsteer keys create ...)
    assert secret.startswith("bsk_") and "\n" not in secret
    assert "not shown again" in out.err and "read, write:measurements" in out.err

    assert main(["keys", "create", "--name", "ops", "--scope", "admin", "--json", *data]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["scopes"] == ["admin"] and made["state"] == "active"
    assert made["key"].startswith("bsk_") and made["expires_at"] is None

    assert main(["keys", "list", "--json", *data]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["name"] for k in listed] == ["beamline 7", "ops"]
    assert listed[0]["expires_at"] is not None and "key" not in listed[0]
    assert main(["keys", "list", *data]) == 0
    table = capsys.readouterr().out
    assert secret not in table and made["key"] not in table and "beamline 7" in table

    assert main(["keys", "revoke", made["id"], *data]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "list", "--json", *data]) == 0
    assert [k["state"] for k in json.loads(capsys.readouterr().out)] == ["active", "revoked"]
    assert main(["keys", "revoke", "no-such-key", *data]) == 1
    assert "no API key" in capsys.readouterr().err

    store = open_store(f"sqlite:///{tmp_path / 'data' / 'beamsteer.db'}")
    try:
        key = store.keys.find_key(hash_secret(secret))
        assert key is not None and key.name == "beamline 7"
    finally:
        store.close()


def test_create_refuses_bad_input(new_database: Callable[[], str],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    # A database of its own: a key in the session's shared one would lock other tests out.
    postgres_url = new_database()
    db = ["--database-url", postgres_url]
    assert main(["keys", "create", "--name", "x", "--scope", "read", "--expires", "soon",
                 *db]) == 2
    assert "use 30d" in capsys.readouterr().err
    assert main(["keys", "create", "--name", "x", "--scope", "read",
                 "--experiment", "no-such-experiment", *db]) == 1
    assert "no experiment" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["keys", "create", "--name", "x", "--scope", "write", *db])
    capsys.readouterr()
    store = open_store(postgres_url)
    try:
        exp = store.create_experiment(SPEC)
    finally:
        store.close()
    assert main(["keys", "create", "--name", "only-e", "--scope", "read",
                 "--experiment", exp.id, "--json", *db]) == 0
    assert json.loads(capsys.readouterr().out)["experiments"] == [exp.id]


def _serve(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """``beamsteer serve`` in a subprocess that reports which heavy modules it loaded."""
    code = ("import sys\n"
            "from clients.cli.main import main\n"
            f"rc = main({['serve', '--data-dir', str(tmp / 'data'), *args]!r})\n"
            "print([m for m in ('torch', 'uvicorn', 'fastapi') if m in sys.modules])\n"
            "sys.exit(rc)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEAMSTEER_")}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**env, "PYTHONPATH": str(ROOT)})


def test_serve_refuses_to_expose_a_server_without_keys(tmp_path: Path) -> None:
    r = _serve(["--host", "0.0.0.0"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "refusing to listen on 0.0.0.0" in r.stderr and "--insecure" in r.stderr
    assert r.stdout.strip() == "[]"  # refused before the service stack was imported


def test_serve_check_passes_with_a_key(tmp_path: Path) -> None:
    from server.cli import _any_key

    url = f"sqlite:///{tmp_path / 'data' / 'beamsteer.db'}"
    assert not _any_key(url)
    assert main(["keys", "create", "--name", "k", "--scope", "read",
                 "--data-dir", str(tmp_path / "data")]) == 0
    assert _any_key(url)
