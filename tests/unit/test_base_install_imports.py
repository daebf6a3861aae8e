"""The base install (``pip install kubetasks``) has no kopf or obstore (nor OpenTelemetry, the
extra [tracing]): the SDK, the trigger and the CLI, every command's parser built, import none (tests/integration/test_packaging.py installs
it for real; this is the quick check, in a process where importing them fails)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OPERATOR = Path(__file__).resolve().parents[2] / "operator"

SCRIPT = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("kopf", "obstore", "opentelemetry"):
            raise ImportError(f"{name} is not in the base install")

sys.meta_path.insert(0, Refuse())
import kubetasks.runtime
from kubetasks import task, trigger
from kubetasks.runtime.trigger import RunHandle
from kubetasks.runtime import entry
from kubetasks.cli import main, deploy, dev
main.build_parser()
from kubetasks.runtime.tracing import caller_annotations
assert caller_annotations() == {}  # no OpenTelemetry loaded: no current span, nothing imported
print("ok")
"""


def test_the_sdk_and_the_cli_import_neither_kopf_nor_obstore():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(OPERATOR), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_operator_without_kopf_names_the_extra():
    script = SCRIPT.replace("import kubetasks.runtime", "import kubetasks.controller.__main__", 1)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(OPERATOR), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert done.stderr.strip().endswith("the kubetasks operator needs kopf: pip install 'kubetasks[operator]'")
