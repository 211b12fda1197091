"""The build a study cell was computed with: odenet's own code and the libraries'
versions, so that a results folder never serves a cell of another build as current.

:func:`cell_build` is what a study puts under ``"build"`` in every cell's key (see
:func:`odenet.studies.convergence.cell_key`); a cell stored with another build (or
before cells recorded one) no longer matches its key and is recomputed.

What it covers:

* ``"odenet"``: a digest of the ``.py`` files of the installed ``odenet`` package
  (paths and contents), except the subpackages no study cell runs
  (:data:`EXCLUDED_SUBPACKAGES`: the fitting layer and the models).  So any change to
  the step loop, the controller, Newton, the problems or the study's own error
  measure — and also a change to a comment, or to the command line's text — makes
  every cell another build's.  It is computed once per process, on first use.
* ``"torch"``, ``"numpy"``, ``"scipy"``: the versions of the libraries every cell runs
  on, whichever solver it times: odenet's solver computes in torch and uses scipy's
  sparse LU (``jac_sparsity``); the problems' exact solutions use numpy and scipy
  (``expm``); scipy's rows evaluate a torch vector field through
  :meth:`~odenet.problems.Problem.numpy_field`.
* ``"torchdiffeq"``: its version, for torchdiffeq's rows only.

What it does not cover: the Python version, the CPU and the BLAS/LAPACK torch and
numpy use, the number of threads; a problem file's code (a study's identity holds
its path and stamp); reference solutions cached on disk (their own key holds scipy's
version and tolerances, :func:`odenet.problems.reference_solution`); and a Dask
cluster's workers, whose environment is assumed to be the submitting process's.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path

__all__ = ["EXCLUDED_SUBPACKAGES", "cell_build", "library_version", "source_digest"]

#: subpackages of odenet that no study cell imports (tests/test_imports.py checks it)
EXCLUDED_SUBPACKAGES = ("fit", "models")
#: the libraries whose versions every cell's build records
BASE_LIBRARIES = ("torch", "numpy", "scipy")


@functools.cache
def source_digest() -> str:
    """A digest of the source of the installed odenet a study cell runs (see the module
    docstring): 16 hex digits, computed on first use (a few ms) and kept."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in EXCLUDED_SUBPACKAGES:
            continue
        h.update(rel.as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.cache
def library_version(name: str) -> str:
    """The version of library ``name`` (the imported module's ``__version__`` when it is
    imported, else the installed distribution's), or ``"not installed"``."""
    module = sys.modules.get(name)
    version = getattr(module, "__version__", None)
    if version is not None:
        return str(version)
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def cell_build(library: str = "odenet") -> dict[str, str]:
    """The build of a cell whose solver comes from ``library`` (``"odenet"``,
    ``"scipy"`` or ``"torchdiffeq"``): odenet's :func:`source_digest` and the versions
    of the libraries that cell runs on (see the module docstring)."""
    libs = BASE_LIBRARIES + (("torchdiffeq",) if library == "torchdiffeq" else ())
    return {"odenet": source_digest(), **{lib: library_version(lib) for lib in libs}}
