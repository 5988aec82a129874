"""``bdr-avalanche --help`` starts fast and quietly: the parser is built
without the runner, and the warnings that importing Avalanche triggers in
packages it pulls in (qpsolvers, jaxopt) are not printed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.system  # every test starts Python processes

HEAVY = ("torch", "avalanche")

# Runs the console script's main and reports, after it exits, which of the
# HEAVY modules it imported (on the last line of stdout).
DRIVER = f"""
import sys
from bdr_avalanche.experiment.cli import main
try:
    main(sys.argv[1:])
finally:
    print("imported:", ",".join(m for m in {HEAVY!r} if m in sys.modules))
"""


def _python(*args: str) -> subprocess.CompletedProcess:
    # "default": show every warning once, DeprecationWarnings included, so a
    # warning that a plain start would hide still shows up here
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture(
    scope="module",
    params=[["--help"], ["run", "--help"], ["compare", "--help"]],
    ids=["help", "run_help", "compare_help"],
)
def help_run(request):
    """``bdr-avalanche ARGS`` in a fresh interpreter: its result, and the
    heavy modules it imported."""
    result = _python("-c", DRIVER, *request.param)
    *text, last = result.stdout.rstrip("\n").split("\n")
    assert last.startswith("imported:"), result.stdout[-2000:]
    imported = [m for m in last.removeprefix("imported:").strip().split(",") if m]
    return request.param, result, "\n".join(text), imported


def test_help_exits_0_with_the_usage(help_run):
    args, result, stdout, _ = help_run
    assert result.returncode == 0, result.stderr[-2000:]
    command = " ".join(args[:-1])
    assert stdout.startswith(f"usage: bdr-avalanche {command}".rstrip())
    assert "--lucir.lambda_base" in stdout or args == ["--help"]


def test_help_prints_no_warning(help_run):
    """Nothing on stderr, even with every warning shown (the qpsolvers /
    jaxopt ones included)."""
    _, result, _, _ = help_run
    assert result.stderr == ""


def test_help_imports_neither_torch_nor_avalanche(help_run):
    _, _, _, imported = help_run
    assert imported == []


def test_importing_the_package_and_its_cli_is_light():
    """``import bdr_avalanche`` and its command line import neither torch nor
    Avalanche (the package's names are imported on first use)."""
    code = (
        "import sys, bdr_avalanche, bdr_avalanche.experiment.cli\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""
    assert result.stderr == ""


def test_package_names_are_imported_on_first_use():
    import bdr_avalanche
    from bdr_avalanche import HerdingBuffer, functional
    from bdr_avalanche.storage import HerdingBuffer as defined

    assert HerdingBuffer is defined and bdr_avalanche.HerdingBuffer is defined
    assert functional.herding_select is bdr_avalanche.functional.herding_select
    assert set(bdr_avalanche.__all__) <= set(dir(bdr_avalanche))
    for name in bdr_avalanche.__all__:
        assert getattr(bdr_avalanche, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        bdr_avalanche.nothing  # noqa: B018
