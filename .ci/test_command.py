#!/usr/bin/env python
"""Print the test command written in README.md (the sh block under "## Run the tests"), so CI runs what users run."""

import re, sys
from pathlib import Path

readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
m = re.search(r"^## Run the tests\n.*?^```sh\n(.*?)^```", readme, re.M | re.S)
if not m or not m[1].strip():
    sys.exit("README.md has no ```sh block under '## Run the tests'")
print(m[1].strip())
