"""Readers for the deployment files, as Docker and Compose read them (the parts we use).

A real parser of either is a Go library; these follow the documented rules closely enough
for our own files, and the tests that use them say which rule each checks.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILES = {"api": ROOT / "docker" / "api.Dockerfile",
               "worker": ROOT / "docker" / "worker.Dockerfile"}


# ---------------------------------------------------------------- Dockerfiles


@dataclass
class Stage:
    """One ``FROM`` of a Dockerfile and the instructions under it."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` per instruction: comments dropped, ``\\`` continuations
    joined (the default escape character)."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def stages(path: Path) -> list[Stage]:
    """The build stages, in order; the last one is the image."""
    result: list[Stage] = []
    for keyword, args in instructions(path):
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            result.append(Stage(base=parts[0], name=name))
        elif result:
            result[-1].instructions.append((keyword, args))
    return result


def exec_form(args: str | None) -> list[str] | None:
    """The JSON array of an exec-form ENTRYPOINT/CMD (``None`` when absent)."""
    if args is None:
        return None
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck_cmd(stage: Stage) -> list[str]:
    """The exec-form command of the stage's ``HEALTHCHECK ... CMD [...]``."""
    args = stage.last("HEALTHCHECK")
    assert args is not None, "no HEALTHCHECK"
    _, _, cmd = args.partition("CMD ")
    value = exec_form(cmd)
    assert value is not None
    return value


# ---------------------------------------------------------------- compose


def load_compose() -> dict[str, Any]:
    """The compose file as YAML (anchors and ``<<`` merges resolved, nothing interpolated)."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$",
                     re.S)


class MissingVariable(KeyError):
    """A ``${VAR:?message}`` whose variable is unset or empty."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation, applied to every string in ``value``: ``$$``, ``$VAR``,
    ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``, ``${VAR?err}``,
    ``${VAR:+alt}``, ``${VAR+alt}``. Mapping keys are not interpolated (compose neither)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("bare"):
            return env.get(m.group("bare"), "")
        parsed = _BRACED.match(m.group("braced"))
        assert parsed, f"bad substitution {m.group(0)!r}"
        name, op, arg = parsed.group("name", "op", "arg")
        is_set = name in env
        has_value = is_set and env[name] != ""
        present = has_value if op and op.startswith(":") else is_set
        if op in (":-", "-"):
            return env[name] if present else arg
        if op in (":?", "?"):
            if not present:
                raise MissingVariable(f"{name}: {arg}")
            return env[name]
        if op in (":+", "+"):
            return arg if present else ""
        return env.get(name, "")

    return _VAR.sub(one, value)


def references(text: str) -> list[tuple[str, str | None]]:
    """Every ``${NAME...}``/``$NAME`` in a text, as ``(name, operator)``."""
    found: list[tuple[str, str | None]] = []
    for m in _VAR.finditer(text):
        if m.group("bare"):
            found.append((m.group("bare"), None))
        elif m.group("braced") is not None:
            parsed = _BRACED.match(m.group("braced"))
            assert parsed, m.group(0)
            found.append((parsed.group("name"), parsed.group("op")))
    return found


def compose_text_without_comments() -> str:
    """The compose file's YAML with comment lines dropped (references in prose excluded)."""
    return "\n".join(line for line in COMPOSE_FILE.read_text().splitlines()
                     if not line.lstrip().startswith("#"))


# ---------------------------------------------------------------- .dockerignore


def _pattern(p: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex over slash-separated paths (Go's filepath.Match
    plus ``**``, matched against a path or any of its parent directories)."""
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        elif p[i] == "[":
            j = p.index("]", i)
            out, i = out + p[i:j + 1], j + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(out + "$")


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    """``(is_exception, pattern)`` per line of .dockerignore; the last match decides."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((exception, _pattern(pattern)))
    return rules


def in_build_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a repository-relative file path reaches the Docker build context."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for exception, pattern in rules:
        if any(pattern.match(c) for c in candidates):
            excluded = not exception
    return not excluded
