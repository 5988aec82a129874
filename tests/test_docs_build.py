"""The documentation's build, with the options of ``make docs``, refuses a
broken link: strict mode holds (``--quiet``, for one, silently defeats it).

``make test`` runs ``make docs`` on the real pages; this test runs the same
command on a copy of them with one broken link and one missing API object.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[1]


def _make_docs_options() -> list[str]:
    """The options that ``make docs`` passes to ``mkdocs build``."""
    for line in (ROOT / "Makefile").read_text().splitlines():
        if '/mkdocs" build' in line:
            return shlex.split(line.split('/mkdocs" build', 1)[1])
    raise AssertionError("the Makefile has no mkdocs build line")


@pytest.mark.parametrize(
    "page, broken",
    [
        ("index.md", "\nSee [a page that is not there](guide/missing.md).\n"),
        ("api/storage.md", "\n::: bdr_avalanche.storage.NoSuchThing\n"),
    ],
)
def test_a_broken_reference_fails_the_build(
    tmp_path: Path, page: str, broken: str
) -> None:
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", copy)
    shutil.copytree(ROOT / "docs", copy / "docs")
    (copy / "bdr_avalanche").symlink_to(ROOT / "bdr_avalanche")
    mkdocs = [sys.executable, "-m", "mkdocs", "build", *_make_docs_options()]
    site = ["--site-dir", str(tmp_path / "site")]

    clean = subprocess.run(mkdocs + site, cwd=copy, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr[-2000:]

    with (copy / "docs" / page).open("a") as file:
        file.write(broken)
    done = subprocess.run(mkdocs + site, cwd=copy, capture_output=True, text=True)
    assert done.returncode != 0, done.stderr[-2000:]
