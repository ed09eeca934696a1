"""The documentation processes: every notebook goes through `nbdev_proc_nbs` with a title, no error output, no broken link."""

import subprocess
import sys

from conftest import ROOT


def test_docs_process():
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check_docs.py")], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "documentation check passed" in r.stdout
