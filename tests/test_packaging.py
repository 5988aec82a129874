"""The package as a user gets it: an sdist and a wheel built from this
checkout, the wheel installed on its own and used from a folder outside the
repository.

The wheel is built *from the sdist* (``python -m build``), so a file the
sdist forgets is missing from the wheel too. Installing into a ``--target``
folder (no dependencies: they come from this environment) and putting it
first on ``PYTHONPATH`` makes Python import the installed copy, not the
checkout; each test checks that it did.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel, built with this environment's setuptools."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def installed(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed (without its dependencies) into a folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
        + ["--target", str(target), str(dists["wheel"])],
        check=True,
        capture_output=True,
    )
    return target


def _outside(
    installed: Path, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in ``tmp_path`` with the installed copy first on the path."""
    # "default": show every warning once, DeprecationWarning included
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONWARNINGS": "default"}
    return subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )


def _tracked(folder: str) -> list[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    listed = subprocess.run(
        ["git", "ls-files", folder], cwd=ROOT, capture_output=True, text=True
    )
    return listed.stdout.split()


def test_sdist_has_what_its_tests_and_docs_need(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    wanted = ["LICENSE", "CITATION.cff", "CHANGELOG.md", "README.md", "mkdocs.yml"]
    wanted += ["Makefile", "requirements/constraints.txt", "scripts/bootstrap.sh"]
    wanted += _tracked("tests") + _tracked("docs") + _tracked("bdr_avalanche")
    missing = sorted(set(wanted) - names)
    assert not missing, f"the sdist lacks {missing}"


def test_wheel_has_presets_licence_and_type_marker(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
    folder = ROOT / "bdr_avalanche" / "presets"
    presets = {p.relative_to(ROOT).as_posix() for p in folder.rglob("*.yaml")}
    assert len(presets) >= 30
    assert not presets - names, f"the wheel lacks {sorted(presets - names)}"
    assert "bdr_avalanche/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names


def test_import_from_the_wheel_is_silent(installed: Path, tmp_path: Path) -> None:
    # Avalanche alone warns at import (qpsolvers or jaxopt): what we silence
    alone = _outside(
        installed, tmp_path, sys.executable, "-c", "import avalanche.training"
    )
    assert "qpsolvers" in alone.stderr or "jaxopt" in alone.stderr, alone.stderr
    code = (
        "import bdr_avalanche\n"
        "from bdr_avalanche import BDRPlugin\n"
        "print(bdr_avalanche.__file__)\n"
    )
    done = _outside(installed, tmp_path, sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(installed)
    assert done.stderr == ""


def test_presets_and_a_digits_run_from_the_wheel(
    installed: Path, tmp_path: Path
) -> None:
    cli = str(installed / "bin" / "bdr-avalanche")
    listed = _outside(installed, tmp_path, sys.executable, cli, "presets")
    assert listed.returncode == 0, listed.stderr
    assert "digits" in listed.stdout
    assert "cifar100/b50_5phases_lucir_cwd_bdr" in listed.stdout
    out = tmp_path / "runs"
    args = ["run", "-c", "digits", "--epochs", "1", "--output_dir", str(out)]
    done = _outside(installed, tmp_path, sys.executable, cli, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    (results,) = out.glob("*/results.json")
    assert results.stat().st_size > 0


def test_the_silencing_is_not_global(installed: Path, tmp_path: Path) -> None:
    code = (
        "import sys, warnings\n"
        "from bdr_avalanche import BDRPlugin\n"
        "assert 'qpsolvers' in sys.modules\n"
        "assert not [f for f in sys.meta_path if 'Quiet' in type(f).__name__]\n"
        "warnings.warn_explicit('no QP solver found', UserWarning, 'x.py', 1,"
        " module='qpsolvers')\n"
    )
    done = _outside(installed, tmp_path, sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    assert "no QP solver found" in done.stderr
