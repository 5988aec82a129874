"""Every code block of ``README.md`` and ``docs/`` that claims to run runs.

The rule, as ``docs/development.md`` states it:

- a ``python`` block runs as a script of its own (a fresh namespace, an
  empty temporary folder as working directory) and must not raise;
- in a ``bash`` block, each line starting with ``bdr-avalanche `` (``\\``
  continues a line) runs through the CLI's :func:`main` in this process,
  ``run`` and ``compare`` with ``--output_dir <tmp> --interactive false
  --epochs 1`` appended, and must exit with status 0;
- in a ``console`` block, a line ``$ bdr-avalanche ...`` is a command and
  the lines after it are what it prints: its stdout or its stderr must
  contain them one after the other (a line ending in ``...`` shows only its
  start), and it must exit with 2 if they are an error, else 0;
- a block right after ``<!-- skip: reason -->`` is reported as skipped
  with that reason; everything else (other languages, other command lines)
  is text.

One test per block, named by file and line, so a failure names the block.
Blocks that train are marked ``integration``; the others run in the unit
tier.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")))
FENCE = re.compile(r"^\s*```(?P<lang>[\w-]*)\s*$")
CLOSE = re.compile(r"^\s*```\s*$")
SKIP = re.compile(r"^\s*<!--\s*skip:(?P<reason>.*?)-->\s*$")
PROGRAM = "bdr-avalanche"
TRAINING = ("run", "compare")
SHORT_RUN = ("--interactive", "false", "--epochs", "1")
ERROR = f"{PROGRAM}: error:"


@dataclass(frozen=True)
class Command:
    """One ``bdr-avalanche`` command of a block and what it must print."""

    argv: tuple[str, ...]
    shown: tuple[str, ...] = ()

    @property
    def trains(self) -> bool:
        return bool(self.argv) and self.argv[0] in TRAINING and not self.fails

    @property
    def fails(self) -> bool:
        return bool(self.shown) and self.shown[0].startswith(ERROR)


@dataclass(frozen=True)
class Block:
    """A fenced code block: where it starts, its language and its text."""

    path: Path
    line: int
    lang: str
    text: str
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the skip reason of the
    comment just before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if CLOSE.match(lines[j])), None)
        assert end is not None, f"{path.name}:{i + 1}: the code block is not closed"
        marker = SKIP.match(lines[i - 1]) if i else None
        reason = marker["reason"].strip() if marker else None
        text = "\n".join(lines[i + 1 : end])
        blocks.append(Block(path, i + 1, opening["lang"], text, reason))
        i = end + 1
    return blocks


def _logical_lines(text: str) -> Iterator[str]:
    """Lines with their ``\\`` continuations joined."""
    pending = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def _argv(line: str) -> tuple[str, ...] | None:
    """The arguments of a ``bdr-avalanche`` command line, else None."""
    words = shlex.split(line, comments=True)
    if not words or words[0] != PROGRAM:
        return None
    return tuple(words[1:])


def commands(block: Block) -> list[Command]:
    """The ``bdr-avalanche`` commands a ``bash`` or ``console`` block runs."""
    if block.lang == "bash":
        found = (_argv(line) for line in _logical_lines(block.text))
        return [Command(argv) for argv in found if argv is not None]
    found_console: list[Command] = []
    for line in _logical_lines(block.text):
        if line.startswith("$ "):
            argv = _argv(line[2:])
            found_console.append(Command(argv if argv is not None else ()))
        elif found_console and found_console[-1].argv:
            last = found_console[-1]
            found_console[-1] = Command(last.argv, (*last.shown, line))
    return [command for command in found_console if command.argv]


def _trains(block: Block) -> bool:
    if block.lang == "python":
        return ".train(" in block.text or "train_and_evaluate(" in block.text
    return any(command.trains for command in commands(block))


def _claims_to_run(block: Block) -> bool:
    if block.lang == "python":
        return True
    return block.lang in ("bash", "console") and bool(commands(block))


def cases() -> list[Any]:
    """One case per block that claims to run."""
    params = []
    for path in FILES:
        for block in read_blocks(path):
            if not _claims_to_run(block):
                continue
            marks = [pytest.mark.integration] if _trains(block) else []
            if block.skip is not None:
                marks.append(pytest.mark.skip(reason=block.skip or "no reason"))
            params.append(pytest.param(block, marks=marks, id=block.name))
    return params


def _run(
    command: Command, output_dir: Path, capsys
) -> tuple[int | str | None, str, str]:
    """Run a command through the CLI's ``main``: status, stdout, stderr."""
    from bdr_avalanche.experiment.cli import main

    argv = list(command.argv)
    if argv[0] in TRAINING:
        argv += ["--output_dir", str(output_dir), *SHORT_RUN]
    capsys.readouterr()
    status: int | str | None
    try:
        status = main(argv)
    except SystemExit as exit_info:  # --help, and argparse's errors
        status = exit_info.code or 0
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _matches(shown: str, printed: str) -> bool:
    """A line shown matches a line printed (``...``: only its start)."""
    if shown.endswith("..."):
        return printed.startswith(shown[:-3].rstrip())
    return printed == shown


def _shows(shown: tuple[str, ...], printed: str) -> bool:
    """Whether ``printed`` holds the lines ``shown``, one after the other."""
    lines, n = printed.splitlines(), len(shown)
    return any(
        all(map(_matches, shown, lines[start : start + n]))
        for start in range(len(lines) - n + 1)
    )


@pytest.mark.parametrize("block", cases())
def test_block_runs(block: Block, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if block.lang == "python":
        code = compile(block.text, block.name, "exec")
        exec(code, {"__name__": "__main__"})
        return
    for number, command in enumerate(commands(block)):
        where = f"{block.name}: bdr-avalanche {shlex.join(command.argv)}"
        assert not any("$" in arg for arg in command.argv), (
            f"{where} uses a shell variable: mark its block skip"
        )
        status, out, err = _run(command, tmp_path / f"results{number}", capsys)
        assert status == (2 if command.fails else 0), f"{where}: status {status}\n{err}"
        if command.shown:
            assert _shows(command.shown, out) or _shows(command.shown, err), (
                f"{where} printed\n{out}{err}\nnot\n" + "\n".join(command.shown)
            )


def test_every_skip_has_a_reason_and_a_block():
    """A skip marker says why, and sits right above a code block."""
    for path in FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            marker = SKIP.match(line)
            if marker:
                where = f"{path.name}:{i + 1}"
                assert marker["reason"].strip(), f"{where}: give the reason to skip"
                following = lines[i + 1] if i + 1 < len(lines) else ""
                assert FENCE.match(following), f"{where}: no code block below"


def test_the_readme_blocks_run():
    """The collection works: the README's snippet and commands are cases
    that run, not skipped ones."""
    running = [
        param.id
        for param in cases()
        if not any(mark.name == "skip" for mark in param.marks)
    ]
    assert sum(name.startswith("README.md:") for name in running) >= 2, running


def test_readme_links_exist():
    """The README's relative links (it is read outside the built site)
    name files of the repository."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README.md links to missing {target}"
