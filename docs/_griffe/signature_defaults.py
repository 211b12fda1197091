"""Griffe extension: show each parameter's own default in the API reference.

A numpy docstring may document several parameters on one line
(``rtol, atol : float``).  Griffe's numpy parser gives every name on such a line the
signature default of the *first* name, so ``solve``'s ``atol`` rendered as ``1e-06``
(``rtol``'s) and ``min_step`` as ``None`` (``first_step``'s).  The signatures are right;
this re-reads each documented parameter's default from the signature after parsing.
"""

from __future__ import annotations

import re

import griffe

# a numpy "Parameters" item that names more than one parameter: "a, b : type" or "a, b"
_GROUPED = re.compile(r"^\s*\*{0,2}\w+(?:,\s*\*{0,2}\w+)+\s*(?::|$)", re.M)


class SignatureDefaults(griffe.Extension):
    def on_function(self, *, func: griffe.Function, **kwargs) -> None:
        doc = func.docstring
        if doc is None or not _GROUPED.search(doc.value):
            return
        for section in doc.parsed:
            if section.kind is not griffe.DocstringSectionKind.parameters:
                continue
            for param in section.value:
                if param.name in func.parameters:
                    param.value = func.parameters[param.name].default
