"""Griffe extension: document the names a package exports lazily (PEP 562).

`odenet/__init__.py` imports almost nothing (so `import odenet` and `odenet --help`
stay light) and resolves names on first use from a `_LAZY = {"name": "module"}` table
in `__getattr__`.  Griffe reads source statically, so `odenet.solve` would not exist
for it and `::: odenet.solve` could not be rendered.  This adds, for every entry of a
package's `_LAZY` table, an alias `package.name -> module.name`, exactly what
`__getattr__` returns at run time.
"""

from __future__ import annotations

import ast

import griffe


class LazyExports(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        table = pkg.members.get("_LAZY")
        if table is None or table.is_alias or table.value is None:
            return
        try:
            lazy = ast.literal_eval(str(table.value))
        except (ValueError, SyntaxError):
            return
        for name, module in lazy.items():
            if name not in pkg.members:
                pkg.set_member(name, griffe.Alias(name, f"{module}.{name}", parent=pkg))
