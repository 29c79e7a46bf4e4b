"""The documentation site builds without a warning (mkdocs --strict: broken links, missing pages and
snippets, and docstrings mkdocstrings cannot parse all fail), and its API reference covers the public API."""

import os
import subprocess
import sys
from pathlib import Path

import convexbn

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "WARNING" not in res.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in convexbn.__all__:  # every public name has an entry in the API reference
        assert f'.{name}"' in api, name
    tutorial = (tmp_path / "site" / "tutorial" / "index.html").read_text()
    # the snippet of benchmarks/results/cli_compare.txt: the search row and the bound line
    assert "convex (search, P=" in tutorial and "bound: certified lower bound" in tutorial
    assert (tmp_path / "site" / "img" / "objective_vs_time.png").stat().st_size > 10_000
