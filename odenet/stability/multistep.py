"""Linear stability of linear multistep methods: the same questions as for Runge–Kutta.

A k-step method ``Σ_j α_j y_{n+j} = h Σ_j β_j f_{n+j}`` applied to ``y' = λy`` has
solutions ``y_n = ζⁿ`` with ``ρ(ζ) − z σ(ζ) = 0`` (``z = hλ``, ``ρ`` and ``σ`` the
characteristic polynomials).  It is

* **zero-stable** when the roots of ``ρ`` lie in the closed unit disc and those on
  the circle are simple (the root condition, Dahlquist);
* **absolutely stable** at ``z`` when every root of ``ρ − zσ`` lies in the unit disc;
  the boundary of that region is contained in the *boundary locus*
  ``z(θ) = ρ(e^{iθ}) / σ(e^{iθ})``;
* **A(α)-stable** when the sector ``|arg(−z)| < α`` lies in the region.

A predictor–corrector pair in PECE mode is not a linear multistep method; its
roots come from its own polynomial in ``ζ`` (``stability_roots`` handles both).

Every function takes a method by name or any scheme as its pair ``(ρ, σ)`` of
coefficient sequences, highest power of ``ζ`` first (as
:func:`characteristic_polynomials` returns them) — e.g. the two-step scheme of the
LM-ResNet, ``odenet.models.LMResNet(...).polynomials()``.

The NDF members ``ndf1``–``ndf5`` (the fixed-step formulas of the variable ``ndf``,
scipy's ``BDF`` and ode15s) are analysed as their ``(ρ, σ)`` pairs on equal steps.

References: Hairer & Wanner, *Solving ODEs II*, Sec. V.1–V.2 (Table V.2.1 for the
A(α) angles of BDF); Hairer, Nørsett & Wanner I, Sec. III.3–III.4; Shampine &
Reichelt, SIAM J. Sci. Comput. 18 (1997), Table 1 (NDF).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from odenet._bdf import NDF_KAPPA_EXACT, characteristic_coefficients
from odenet._multistep import LinearMultistep, adams_bashforth, adams_moulton, bdf
from odenet._registry import multistep
from odenet.stability._errors import StabilityInputError


@dataclass(frozen=True)
class _Pair:
    """A scheme given as ``(ρ, σ)``: analysed like a named method, exactly when the
    coefficients are (floats are read as their shortest decimal, so ``0.1`` is 1/10)."""

    rho: tuple[Fraction, ...]
    sigma: tuple[Fraction, ...]
    name: str = "(ρ, σ)"
    family = "pair"

    @property
    def steps(self) -> int:
        return len(self.rho) - 1


def _exact(x, where: str) -> Fraction:
    if isinstance(x, (int, Fraction)) and not isinstance(x, bool):
        return Fraction(x)
    if isinstance(x, numbers.Real) and math.isfinite(float(x)):
        # the shortest decimal that round-trips: 1 − 0.3 and 0.3 then sum exactly to 1
        return Fraction(repr(float(x)))
    raise StabilityInputError(f"{where} must hold finite real numbers, got {x!r}.")


def _pair(method) -> _Pair:
    try:
        rho, sigma = (list(p) for p in method)
    except (TypeError, ValueError):
        raise StabilityInputError(
            "a scheme given by its coefficients must be a pair `(rho, sigma)` of "
            f"sequences, highest power of ζ first; got {method!r}."
        ) from None
    if len(rho) < 2 or len(rho) != len(sigma):
        raise StabilityInputError(
            f"`(rho, sigma)` must be two sequences of the same length k + 1 ≥ 2 (pad σ of an "
            f"explicit scheme with a leading 0), got lengths {len(rho)} and {len(sigma)}."
        )
    r = tuple(_exact(x, "`rho`") for x in rho)
    if r[0] == 0:
        raise StabilityInputError(
            "`rho[0]` (the coefficient of ζ^k, on y_{n+k}) must be nonzero; drop leading zeros "
            "of both polynomials."
        )
    return _Pair(r, tuple(_exact(x, "`sigma`") for x in sigma))


def _ndf(k: int) -> _Pair:
    """NDF ``k`` on equal steps, ``Σ_{j≤k} ∇ʲ y_{n+1}/j − κ_k γ_k ∇^{k+1} y_{n+1} = h f_{n+1}``
    (a (k + 1)-step method; BDF ``k`` where ``κ_k = 0``), as an exact ``(ρ, σ)``."""
    if NDF_KAPPA_EXACT[k] == 0:
        rho, sigma = characteristic_polynomials(f"bdf{k}")
        return _Pair(tuple(rho), tuple(sigma), f"ndf{k}")
    sigma = (Fraction(1),) + (Fraction(0),) * (k + 1)
    return _Pair(characteristic_coefficients(k, ndf=True), sigma, f"ndf{k}")


def _method(method) -> LinearMultistep | _Pair:
    if isinstance(method, _Pair):
        return method
    if isinstance(method, (tuple, list)):
        return _pair(method)
    lm = multistep(method)
    # variable-step families (bdf, ndf) are not one (ρ, σ) pair
    if lm is not None and not isinstance(lm, LinearMultistep):
        if "adams" in lm.name:
            members = (
                "ab1–ab6 for the explicit, am1–am6 for the implicit, abm2–abm6 for the "
                "predictor–corrector ones; "
                "on equal steps a variable-step Adams method of order k is one of them"
            )
        else:
            members = (
                "ndf1–ndf5 for 'ndf' (as stable as BDF at orders 1, 2 and 5, less at 3 "
                "and 4: A(α) 80° and 66° against 86° and 73°), bdf1–bdf5 for 'bdf'"
            )
        raise StabilityInputError(
            f"`method` {method!r} changes its order and step as it runs: analyse one of its "
            f"fixed-step members instead ({members})."
        )
    if lm is None:
        name = method.lower() if isinstance(method, str) else ""
        if name.startswith("ndf") and name[3:] in ("1", "2", "3", "4", "5"):
            return _ndf(int(name[3:]))
        if name.startswith("bdf"):
            k = int(name[3:]) if name[3:].isdigit() else 0
            if k >= 1:  # BDF7 and beyond: analysable (they are not zero-stable)
                return LinearMultistep(name, "bdf", k)
        raise StabilityInputError(
            f"`method` must be a linear multistep method (ab1–ab6, am1–am6, abm2–abm6, bdf1–bdf6, "
            f"bdfK for any K ≥ 1, ndf1–ndf5, or a pair (rho, sigma) of coefficients), got "
            f"{method!r}."
        )
    return lm


def characteristic_polynomials(method) -> tuple[list[Fraction], list[Fraction]]:
    """``(ρ, σ)``: exact coefficients, highest power of ``ζ`` first (length ``k + 1``).

    ``method`` is a name or a pair ``(ρ, σ)`` itself (returned as Fractions, checked).
    For ``abm`` (PECE) the pair of its *corrector* is returned; its stability is
    computed from its own polynomial by :func:`stability_roots`.
    """
    lm = _method(method)
    k = lm.steps
    if isinstance(lm, _Pair):
        return list(lm.rho), list(lm.sigma)
    if lm.family == "bdf":
        a = bdf(k)  # a_j on y_{n+1−j}
        return [x / a[0] for x in a], [Fraction(1) / a[0]] + [Fraction(0)] * k
    rho = [Fraction(1), Fraction(-1)] + [Fraction(0)] * (k - 1)
    if lm.family == "ab":
        b = adams_bashforth(k)  # on f_{n−j}: ζ^{k−1−j}
        return rho, [Fraction(0), *b]
    # Adams–Moulton of order p (am, or the corrector of abm): p − 1 steps, padded to k
    c = adams_moulton(lm.order - 1)
    return rho, [*c, *([Fraction(0)] * (k + 1 - len(c)))]


def order(method) -> int:
    """The order ``p`` from the exact conditions ``Σ α_j j^q = q Σ β_j j^{q−1}``.

    For a ``(ρ, σ)`` pair the conditions hold to ``10⁻¹²`` of the size of their terms,
    since float coefficients such as ``1 − 1.2`` carry a rounding error (0 means
    inconsistent: ``ρ(1) ≠ 0`` or ``ρ'(1) ≠ σ(1)``).
    """
    lm = _method(method)
    rho, sigma = characteristic_polynomials(lm)
    k = len(rho) - 1
    alpha, beta = rho[::-1], sigma[::-1]  # α_j on y_{n+j}, j = 0..k
    rel = Fraction(1, 10**12) if isinstance(lm, _Pair) else 0
    p = 0
    for q in range(0, 2 * k + 3):
        a_terms = [alpha[j] * Fraction(j) ** q for j in range(k + 1)]
        b_terms = [q * beta[j] * Fraction(j) ** (q - 1) for j in range(k + 1)] if q else [0]
        scale = sum(abs(x) for x in a_terms + b_terms)
        if abs(sum(a_terms) - sum(b_terms)) > rel * scale:
            break
        p = q
    return p


def is_zero_stable(method, tol: float = 1e-9) -> bool:
    """The root condition on ``ρ``."""
    rho, _ = characteristic_polynomials(method)
    roots = np.roots([float(x) for x in rho])
    for i, r in enumerate(roots):
        if abs(r) > 1 + tol:
            return False
        if abs(abs(r) - 1) <= tol and np.any(np.abs(np.delete(roots, i) - r) <= 1e-6):
            return False
    return True


def stability_roots(method, z) -> np.ndarray:
    """Roots ``ζ`` of the method applied to ``y' = λy`` with ``z = hλ``: ``[k]``."""
    lm = _method(method)
    z = complex(z)
    if lm.family == "abm":
        # y_p = y_n + z Σ b_j y_{n−j};  y_{n+1} = y_n + z (c_0 y_p + Σ_{j≥1} c_j y_{n+1−j})
        k = lm.steps
        b = [float(x) for x in adams_bashforth(k)]
        c = [float(x) for x in adams_moulton(k - 1)]
        poly = np.zeros(k + 1, dtype=complex)  # highest first: ζ^k … ζ^0
        poly[0] += 1  # ζ^{n+1} relative to ζ^{n+1−k}
        poly[1] -= 1 + z * c[0]
        for j, bj in enumerate(b):  # z c0 z b_j ζ^{n−j}
            poly[1 + j] -= z * c[0] * z * bj
        for j in range(1, len(c)):  # z c_j ζ^{n+1−j}
            poly[j] -= z * c[j]
        return np.roots(poly)
    rho, sigma = characteristic_polynomials(lm)
    poly = np.array([float(r) for r in rho], dtype=complex) - z * np.array(
        [float(s) for s in sigma], dtype=complex
    )
    return np.roots(poly)


def is_absolutely_stable(method, z, tol: float = 1e-9) -> bool:
    """Every root of ``ρ − zσ`` in the closed unit disc."""
    return bool(np.all(np.abs(stability_roots(method, z)) <= 1 + tol))


def boundary_locus(method, n: int = 2001) -> np.ndarray:
    """``z(θ) = ρ(e^{iθ}) / σ(e^{iθ})`` for ``θ`` in ``[0, 2π)``: ``[n]`` complex
    (``inf`` where ``σ`` vanishes).  Linear multistep methods only."""
    lm = _method(method)
    if lm.family == "abm":
        raise StabilityInputError(
            "the boundary locus is defined for linear multistep methods; a PECE pair "
            f"({lm.name!r}) is not one: use `stability_roots` / `is_absolutely_stable`."
        )
    rho, sigma = characteristic_polynomials(lm)
    zeta = np.exp(1j * np.linspace(0, 2 * np.pi, n, endpoint=False))
    num = np.polyval([float(x) for x in rho], zeta)
    den = np.polyval([float(x) for x in sigma], zeta)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / den, np.inf)


def a_alpha(method, n: int = 200_001) -> float:
    """The A(α) angle in degrees: the widest sector ``|arg(−z)| < α`` inside the
    stability region (90 for A-stable methods, 0 when none).

    The boundary locus bounds the sector: no locus point lies inside
    ``|arg(−z)| < α_locus``, so the number of roots outside the unit circle is the
    same at every point of that sector.  Whether that number is 0 is checked with
    the root condition at points of the sector (radii 10⁻² … 10⁶); if they are
    unstable (e.g. leapfrog and Milne–Simpson, whose whole locus is a segment of
    the imaginary axis with unstable points on both sides, or methods with a
    bounded region) α is 0.
    """
    lm = _method(method)
    if lm.family == "abm" or not is_zero_stable(lm):
        # a PECE pair is explicit as a whole: its region is bounded, no sector fits
        return 0.0
    z = boundary_locus(lm, n)
    z = z[np.isfinite(z) & (np.abs(z) > 1e-10)]
    ang = np.abs(np.angle(-z))  # in [0, π]; a locus point at angle a blocks sectors > a
    alpha = min(np.pi / 2, float(ang.min()))
    radii = np.geomspace(1e-2, 1e6, 9)
    inside = [-r * np.exp(1j * phi) for r in radii for phi in (0.0, alpha / 2, -alpha / 2)]
    if alpha == 0.0 or not all(is_absolutely_stable(lm, zz) for zz in inside):
        return 0.0
    return float(np.degrees(alpha))


def real_stability_interval(method, x_min: float = -50.0, n: int = 600) -> float:
    """Left end ``x < 0`` of the real interval ``(x, 0)`` of absolute stability
    (``-inf`` when stable on the whole negative real axis, 0.0 when none).

    Scanned on ``n`` geometrically spaced points from ``−10⁻⁶`` to ``x_min``; while every
    point is stable, on ranges that widen a hundredfold (an interval longer than
    ``|x_min|`` is bounded all the same: the LM-ResNet layer with ``k = −0.95`` ends at
    −78, and was reported as ``-inf``).  Past ``−10⁸`` an implicit method whose ``σ``
    has its roots in the closed unit disc is stable to ``−∞`` (the roots of ``ρ − zσ``
    tend to those of ``σ``); others are scanned on, to ``−10³⁰⁰``.  The first unstable
    point is bisected against the last stable one."""
    lm = _method(method)
    near, far, points = 1e-6, -float(x_min), n
    while True:
        xs = -np.geomspace(near, far, points)
        stable = np.array([is_absolutely_stable(lm, x) for x in xs])
        if not stable.all():
            break
        if (far >= 1e8 and _stable_at_infinity(lm)) or far >= 1e300:
            return -math.inf
        near, far, points = far, min(far * 100.0, 1e300), max(n // 10, 20)
    first_bad = int(np.argmin(stable))
    if first_bad == 0:
        if near == 1e-6:
            return 0.0
        lo, hi = xs[0], -near  # unstable, stable (the last range's far end)
    else:
        lo, hi = xs[first_bad], xs[first_bad - 1]  # unstable, stable
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if is_absolutely_stable(lm, mid):
            hi = mid
        else:
            lo = mid
    return float(hi)


def _stable_at_infinity(lm, tol: float = 1e-9) -> bool:
    """Whether ``ρ − zσ`` keeps its roots in the closed unit disc as ``z → −∞``: an
    implicit linear multistep method (``σ`` of full degree) whose ``σ`` has its roots
    there (a PECE pair is explicit: its roots grow with ``|z|``)."""
    if lm.family == "abm":
        return False
    _, sigma = characteristic_polynomials(lm)
    if sigma[0] == 0:
        return False
    return bool(np.all(np.abs(np.roots([float(x) for x in sigma])) <= 1 + tol))
