"""torchdiffeq's Adams methods (``explicit_adams``, ``implicit_adams``, ``fixed_adams``).

``METHODS`` maps each name to its method object (the protocol of
:class:`odenet._multistep.LinearMultistep`); :func:`odenet._multistep.registered`
collects it.
"""

from __future__ import annotations

METHODS: dict = {}
