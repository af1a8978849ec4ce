"""The Streamlit settings the dashboard runs with (.streamlit/config.toml, read from the repo root as `make run` starts)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_server_reads_the_repos_config_and_skips_the_full_gc_after_each_script_run():
    """Streamlit's default gc.collect(2) after every script run (ScriptRunner._on_script_finished; AppTest's runner
    skips it, so only the setting can be checked here) held the GIL ~0.5 s each 2-s poll of a running job's live
    view, in the process that trains it (docs/RESULTS.md, "What watching costs, MovieLens")."""
    out = subprocess.run([sys.executable, "-c", "from streamlit import config; "
                          "print(config.get_option('runner.postScriptGC'), config.get_option('server.address'))"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "127.0.0.1"]



def test_the_launcher_imports_the_pages_without_streamlits_no_runtime_warnings():
    """`make run` printed 7 'No runtime found, using MemoryCacheStorageManager' lines before the server started."""
    code = "from app.serve import _import_warm_up; assert callable(_import_warm_up())"
    err = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stderr
    assert "No runtime found" not in err
    plain = subprocess.run([sys.executable, "-c", "import app.state"], cwd=REPO, capture_output=True, text=True,
                           check=True).stderr
    assert "No runtime found" in plain        # the check can fail: imported plainly, Streamlit says it
