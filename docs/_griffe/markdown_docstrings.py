"""Griffe extension: render reStructuredText leftovers in docstrings as markdown.

Docstrings are converted to markdown in the source module by module (single
backticks, `[name][odenet.path]` cross-references); until a module is converted its
Sphinx roles (`:func:`x``) and double-backtick literals would show raw on the API
pages.  This rewrites them when the docs are built, without touching the source:

- `:role:`target`` and `:role:`~a.b.target`` -> `target` (code, not a link: a link
  to a name the reference does not document would fail the strict build);
- double-backtick literals -> single-backtick code;
- in `name : type` lines of numpy sections the type is shown verbatim inside code, so
  backticks there are dropped;
- a paragraph ending in `::` (an RST literal block) ends in `:` instead.

Doctest lines (`>>>`, `...`) are left alone.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):`~?([^`]+)`")
_DOUBLE = re.compile(r"``(.+?)``")
_TYPED = re.compile(r"^(\s*)([\w*][\w*, ]*) : (.*)$")
_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
_TYPED_SECTIONS = {"Parameters", "Other Parameters", "Returns", "Yields", "Attributes", "Receives"}


def _role(m: re.Match) -> str:
    target = m.group(1)
    # `~a.b.c` shows `c`; an explicit title `text <target>` shows the text
    if "<" in target and target.endswith(">"):
        return f"`{target.split('<', 1)[0].strip()}`"
    return f"`{target}`"


def to_markdown(text: str) -> str:
    lines = text.split("\n")
    out = []
    section = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith((">>>", "...")):
            out.append(line)
            continue
        if i + 1 < len(lines) and _UNDERLINE.match(lines[i + 1]) and stripped:
            section = stripped
        line = _ROLE.sub(_role, line)
        typed = _TYPED.match(line)
        if typed and section in _TYPED_SECTIONS:
            line = f"{typed.group(1)}{typed.group(2)} : {typed.group(3).replace('`', '')}"
        else:
            line = _DOUBLE.sub(r"`\1`", line)
            if line.endswith("::") and not line.endswith(":::"):
                line = line[:-1]
        out.append(line)
    return "\n".join(out)


class MarkdownDocstrings(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        doc = obj.docstring
        if doc is not None and ("`" in doc.value or "::" in doc.value):
            doc.value = to_markdown(doc.value)
