"""bdr_avalanche.experiment.loggers.WandBLogger on its own: offline without a key,
bounded waits, an online start that fails falls back to offline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bdr_avalanche
from bdr_avalanche.experiment.loggers import (
    WANDB_INIT_TIMEOUT_S,
    _bounded_settings,
    resolve_wandb_mode,
)

METRIC = "Top1_Acc_Stream/eval_phase/test_stream"

# Built, used and closed the way a user would, in a fresh interpreter (wandb
# keeps process-wide state); prints what the test checks.
SCRIPT = textwrap.dedent(
    f"""
    import json, sys
    from avalanche.evaluation.metric_results import MetricValue
    from bdr_avalanche.experiment.loggers import WandBLogger

    params = json.loads(sys.argv[1])
    logger = WandBLogger(project_name="x", params=params)
    run = logger.wandb.run
    mode, run_id, run_dir = run.settings.mode, run.id, run.dir
    logger.log_metrics([MetricValue(None, {METRIC!r}, 0.5, x_plot=3)])
    logger.close()
    print("RESULT", json.dumps(dict(
        mode=mode, id=run_id, dir=run_dir,
        finished=logger.wandb.run is None,
    )))
    """
)


def sandbox_env(tmp_path, **extra: str) -> dict[str, str]:
    """The environment with no wandb settings or key, and every place wandb
    (or matplotlib, torch, ...) writes to under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env.update(
        HOME=str(home),  # no ~/.netrc with a key
        TMPDIR=str(tmp),  # wandb's media and artifact staging folders
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        WANDB_DIR=str(tmp_path),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
        WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
        WANDB_ARTIFACT_DIR=str(tmp_path / "wandb-artifacts"),
        **extra,
    )
    # the bdr_avalanche under test, whichever is installed
    root = str(Path(bdr_avalanche.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def run_logger(tmp_path, env, params=None, timeout=900) -> dict:
    """Run SCRIPT; a hang fails the test through the subprocess timeout."""
    work = tmp_path / "cwd"
    work.mkdir()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, json.dumps(params or {})],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"WandBLogger did not finish within {timeout} s:\n{err.stderr}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    result["stderr"] = proc.stderr
    return result


def offline_run_file(tmp_path, run_id: str):
    runs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    files = list(runs[0].glob(f"run-{run_id}.wandb"))
    assert len(files) == 1
    return files[0]


def silent_server() -> socket.socket:
    """A listening socket that accepts connections and never replies."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    return server


def was_contacted(server: socket.socket) -> bool:
    """Whether anything connected to ``server`` (a pending connection)."""
    server.setblocking(False)
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return False
    return True


@pytest.mark.system
def test_wandb_logger_alone_without_key_runs_offline(tmp_path):
    """WandBLogger(project_name=...) with no key: offline, files under
    tmp_path only, the metric in the run file, and no server contacted
    (Avalanche's own logger fails on wandb.util.generate_id)."""
    with silent_server() as server:
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        result = run_logger(tmp_path, sandbox_env(tmp_path, WANDB_BASE_URL=url))
        assert not was_contacted(server)  # no wait for a server
    assert result["mode"] == "offline"
    assert result["finished"]
    run_file = offline_run_file(tmp_path, result["id"])
    assert str(run_file.parent) in result["dir"]
    assert METRIC.encode() in run_file.read_bytes()
    assert not (tmp_path / "cwd" / "wandb").exists()  # WANDB_DIR was used


@pytest.mark.system
def test_wandb_logger_online_start_that_fails_falls_back_offline(tmp_path):
    """A key but a server that never answers: the bounded init gives up and
    the run goes offline, with the same id (so `wandb sync` can append)."""
    with silent_server() as server:
        port = server.getsockname()[1]
        env = sandbox_env(
            tmp_path,
            WANDB_API_KEY="x" * 40,
            WANDB_BASE_URL=f"http://127.0.0.1:{port}",
        )
        params = {"id": "abc12345", "resume": "allow", "settings": {"init_timeout": 3}}
        result = run_logger(tmp_path, env, params)
        assert was_contacted(server)  # it did try, and gave up
    # the bounded init gave up on its own (an unbounded one hangs until
    # run_logger's timeout fails the test)
    assert "could not start online" in result["stderr"]
    assert result["mode"] == "offline" and result["id"] == "abc12345"
    assert METRIC.encode() in offline_run_file(tmp_path, "abc12345").read_bytes()


@pytest.mark.parametrize("mode", ["online", "offline", "disabled"])
def test_resolve_wandb_mode_keeps_explicit_modes(mode, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode(mode) == mode


def test_resolve_wandb_mode_auto(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_wandb_mode("auto") == "offline"
    (tmp_path / ".netrc").write_text(
        "machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n"
    )
    (tmp_path / ".netrc").chmod(0o600)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_wandb_mode("auto") == "online"


def test_bounded_settings(monkeypatch):
    """Timeouts default to WANDB_INIT_TIMEOUT_S; given ones (settings or
    environment) are kept; the caller's settings are not modified."""
    import wandb

    monkeypatch.delenv("WANDB_INIT_TIMEOUT", raising=False)
    monkeypatch.delenv("WANDB_LOGIN_TIMEOUT", raising=False)
    default = _bounded_settings(wandb, None)
    assert default.init_timeout == default.login_timeout == WANDB_INIT_TIMEOUT_S
    given = wandb.Settings(init_timeout=7.0, silent=True)
    bounded = _bounded_settings(wandb, given)
    assert (bounded.init_timeout, bounded.login_timeout) == (7.0, WANDB_INIT_TIMEOUT_S)
    assert bounded.silent and given.login_timeout is None
    from_dict = _bounded_settings(wandb, {"login_timeout": 2.0})
    assert (from_dict.init_timeout, from_dict.login_timeout) == (
        WANDB_INIT_TIMEOUT_S,
        2.0,
    )
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    left = _bounded_settings(wandb, None)  # for wandb.init to take from the env
    assert "init_timeout" not in left.model_fields_set
    assert left.login_timeout == WANDB_INIT_TIMEOUT_S
