"""Exposure: the dashboard binds to 127.0.0.1 by default (Makefile and .streamlit/config.toml); the project never
starts anything on 0.0.0.0; no secret from the environment reaches logged params, tags, metrics or artifacts."""
from __future__ import annotations

import logging
import re
import secrets
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from em3 import paths
from em3.config import preset, with_overrides
from em3.training.run import run_training

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[2]
SECRET_VARS = ("AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "MLFLOW_TRACKING_PASSWORD", "EM3_TEST_API_KEY")


def test_make_run_and_the_streamlit_config_bind_to_loopback():
    make_run = re.search(r"^run:.*?\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert "--server.address 127.0.0.1" in make_run
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())   # `streamlit run app/main.py` too
    assert config["server"]["address"] == "127.0.0.1"


def test_nothing_in_the_project_binds_all_interfaces_by_default():
    hits = []
    for folder in ("em3", "app", "pages"):
        for f in (REPO / folder).rglob("*.py"):
            if re.search(r"0\.0\.0\.0|--host\s+0|server\.address\s*[= ]\s*['\"]?0", f.read_text()):
                hits.append(str(f.relative_to(REPO)))
    assert hits == []


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of LISTEN sockets on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                found.add(addr)
    return found


@pytest.mark.slow
def test_streamlit_run_without_flags_listens_on_loopback_only():
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs /proc/net/tcp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not _listening_addresses(port):
            time.sleep(0.2)
        addrs = _listening_addresses(port)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert addrs, "streamlit never listened"
    # 0100007F = 127.0.0.1; an all-zero address would be every interface
    assert addrs <= {"0100007F", "00000000000000000000000001000000"}, addrs


@pytest.mark.slow
def test_no_secret_from_the_environment_is_logged(fresh_store: Path, monkeypatch, tmp_path: Path, caplog, capfd):
    values = {k: f"s3cr3t-{k}-{secrets.token_hex(8)}" for k in SECRET_VARS}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    cfg = with_overrides(preset("tiny"), {"train.epochs": 1, "train.max_steps_per_epoch": 2})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with caplog.at_level(logging.DEBUG):
            result = run_training(cfg, run_name="secrets")
    finally:
        torch.set_num_threads(threads)
    client = MlflowClient(tracking_uri=paths.tracking_uri())
    run = client.get_run(result.run_id)
    logged = [str(x) for x in (*run.data.params.items(), *run.data.tags.items(), *run.data.metrics)]
    art = Path(client.download_artifacts(result.run_id, "", str(tmp_path / "art")))
    files = [p for p in art.rglob("*") if p.is_file()]
    assert len(files) >= 5                              # config.json, checkpoint/, explain/ were all scanned
    out, err = capfd.readouterr()
    blobs = ["\n".join(logged), out, err, caplog.text] + [p.read_bytes().decode("latin-1") for p in files]
    for k, v in values.items():
        leaks = [i for i, b in enumerate(blobs) if v in b]
        assert leaks == [], f"{k} leaked into {leaks}"
