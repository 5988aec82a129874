"""Griffe extension for the API reference: the docstrings' Sphinx markup as
Markdown.

The package's docstrings are written for Sphinx (``:class:`~a.B```,
``.. math::``, ``text::`` before a literal block). mkdocstrings parses their
``:param:`` fields but shows the roles as written, so this extension
rewrites, before rendering, a role as a code span of its target (``B`` for
``~a.B``, the title for ``title <target>``), a ``.. math::`` directive as a
fenced block, and a paragraph's closing ``::`` as ``:``.

The hyper-parameter records of :mod:`bdr_avalanche.params` get their
``:param:`` list from the ``@params`` decorator at import (each field with
its help, default and range), which reading the source cannot see: their
docstring is read from the imported class (the module imports neither torch
nor Avalanche). This extension changes what the reference shows, never the
package.
"""

from __future__ import annotations

import importlib
import inspect
import re
import textwrap
from typing import Any

import griffe

__all__ = ["SphinxMarkup", "to_markdown"]

_ROLE = re.compile(r":(?:py:)?(?P<role>[a-z]+):`(?P<body>[^`]+)`")
_TITLED = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$")
_MATH = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*\n", re.M)


def _role(match: re.Match[str]) -> str:
    """One role as a code span: its title, or its target (the last part
    of the target when it starts with ``~``)."""
    body = match["body"]
    titled = _TITLED.match(body)
    if titled:
        text = titled["title"]
    elif body.startswith("~"):
        text = body[1:].rsplit(".", 1)[-1]
    else:
        text = body
    return f"`{text}`"


def _math_blocks(text: str) -> str:
    """Each ``.. math::`` directive and its indented body as a fenced
    block."""
    while match := _MATH.search(text):
        indent = len(match["indent"])
        lines = text[match.end() :].split("\n")
        body: list[str] = []
        for line in lines:
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            body.append(line)
        while body and not body[-1].strip():
            body.pop()
        fence = " " * indent + "```text"
        formula = textwrap.indent(textwrap.dedent("\n".join(body)), " " * indent)
        block = "\n".join([fence, formula, fence[: indent + 3]])
        rest = "\n".join(lines[len(body) :])
        text = text[: match.start()] + block + "\n" + rest
    return text


def to_markdown(text: str) -> str:
    """A docstring's Sphinx markup as Markdown."""
    text = _math_blocks(text)
    text = _ROLE.sub(_role, text)
    return re.sub(r"(?<=\S)::$", ":", text, flags=re.M)


class SphinxMarkup(griffe.Extension):
    """Rewrites every docstring of the loaded package with :func:`to_markdown`."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """The package itself (:meth:`on_object` sees only its members)."""
        self.on_object(obj=pkg)

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Any member of the package, at any depth."""
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)

    def on_class(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        """A record built by ``@params``: the docstring it was given."""
        made = any(str(decorator.value) == "params" for decorator in cls.decorators)
        if made and cls.docstring is not None:
            record = getattr(importlib.import_module(cls.module.path), cls.name)
            cls.docstring.value = to_markdown(inspect.cleandoc(record.__doc__))
            cls.set_member("__init__", _constructor(record, cls))


def _constructor(record: type, cls: griffe.Class) -> griffe.Function:
    """The ``__init__`` that ``@params`` generates (the record's fields as
    keyword arguments with their defaults), for the signature and for
    matching the ``:param:`` list."""
    fields = inspect.signature(record).parameters.values()
    parameters = griffe.Parameters(
        *(
            griffe.Parameter(
                field.name,
                annotation=str(field.annotation),
                kind=griffe.ParameterKind.keyword_only,
                default=repr(field.default),
            )
            for field in fields
        )
    )
    return griffe.Function("__init__", parameters=parameters, parent=cls)
