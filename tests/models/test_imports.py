import ast
import subprocess
import sys
from pathlib import Path

import models

MODELS = Path(models.__file__).parent


def test_models_never_imports_server():
    code = ("import sys, models.registry, models.cli, models.superres.train, models.tagger.train; "
            "bad = [m for m in sys.modules if m == 'server' or m.startswith('server.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=MODELS.parent)


def test_net_files_import_only_torch():
    for net in MODELS.glob("*/net.py"):
        roots = set()
        for node in ast.walk(ast.parse(net.read_text())):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots.add(node.module.split(".")[0])
        assert roots <= {"torch", "__future__", "dataclasses"}, (net, roots)
