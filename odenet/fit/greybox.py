"""Grey-box fitting: the user's mechanistic vector field with unknown parameters.

``GreyBoxField(mechanism, params)`` turns ``mechanism(t, x, p) -> dx/dt`` (torch, ``p``
a dict of scalars) into a learnable field; positive parameters are learnt as
logarithms so they stay positive.  An optional neural correction ``g(x)`` makes a
hybrid ``f = mechanism + g``.  Plug it into :class:`~odenet.fit.continuous.ShootingODE`
with ``physical=True`` (the mechanism speaks physical units; the trainer supplies
the normaliser).

:class:`OneCompartmentPK` is a grey-box model whose state is not the observation:
an oral one-compartment model with first-order absorption, doses entering the gut
compartment as jumps.

:class:`GreyBoxMLE` fits a mechanism by maximum likelihood over its parameters *and*
every series' initial state (Levenberg–Marquardt with exact Jacobians from the forward
variational equations; multiple shooting first, then single shooting), with
Gauss–Newton standard errors: use it through ``fit(..., optimizer="gauss_newton")``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

import odenet
from odenet._errors import InputError
from odenet._jacobian import batched_jacobian
from odenet._validate import resolve_method
from odenet.batch import IrregularBatch
from odenet.fit._common import QueryGrid, fill_locf, masked_mse, on_cpu
from odenet.fit.data import SeriesMismatchError
from odenet.fit.datasets import damped_oscillator_field, lotka_volterra_field


class GreyBoxField(nn.Module):
    """Learnable mechanistic field ``f(t, x) = mechanism(t, x, p) [+ correction(x)]``.

    Parameters
    ----------
    mechanism : callable ``(t, x [..., K, S], p: dict[str, Tensor]) -> [..., K, S]``
        The known structure, in physical units.  With only shared parameters and
        no covariates every ``p[name]`` is a 0-dim tensor; once
        :class:`GreyBoxMLE` has per-series parameters or covariates, each ``p[name]``
        is a column ``[..., K, 1]`` (one value per row), so write mechanisms that
        work with both, e.g. ``p["r"] * x[..., 0:1]`` and ``torch.cat(..., -1)``.
    params : dict[str, float]
        Initial guesses of the unknown parameters.
    positive : bool or iterable of str
        Which parameters are learnt as logarithms (so they stay positive): all
        (True), none (False) or the named ones.  Their guesses must be > 0.
    correction : nn.Module ``(t, x) -> [K, S]``, optional
        A neural correction added to the mechanism (hybrid model).  Its output layer
        should start near 0 so the fit starts from the mechanism.
    states : list of str, optional
        Names of the state components (default: the data channels, in order).
        States that no data channel is named after are latent (never observed).
    covariates : list of str
        Names of covariate columns the mechanism reads from ``p`` (per series, or
        time-varying: the last value at or before ``t``; before a series' first value of
        the covariate, that first value).  Only :class:`GreyBoxMLE` supplies them.
    x0_guess : dict[str, float], optional
        Starting values of latent (unobserved) initial states (default 0).
    """

    def __init__(
        self,
        mechanism: Callable,
        params: dict,
        *,
        positive=True,
        correction: nn.Module | None = None,
        states: list | None = None,
        covariates=(),
        x0_guess: dict | None = None,
    ):
        super().__init__()
        if not callable(mechanism):
            raise InputError(f"`mechanism` must be callable (t, x, p) -> dx/dt, got {mechanism!r}.")
        if not params:
            raise InputError("`params` must name at least one unknown parameter with a guess.")
        self.names = list(params)
        if isinstance(positive, bool):
            pos = set(self.names) if positive else set()
        else:
            pos = set(positive)
            unknown = sorted(pos - set(self.names))
            if unknown:
                raise InputError(
                    f"`positive` names {unknown}, which are not parameters; the parameters "
                    f"are {self.names}."
                )
        bad = {k: v for k, v in params.items() if k in pos and not float(v) > 0}
        if bad:
            raise InputError(
                f"`params` {bad} must be > 0: they are positive (learnt as logs); "
                "give positive guesses or leave them out of `positive`."
            )
        self.mechanism = mechanism
        self.positive = positive
        self.states = None if states is None else [str(s) for s in states]
        self.covariates = [str(c) for c in covariates]
        clash = sorted(set(self.covariates) & set(self.names))
        if clash:
            raise InputError(f"{clash} are both parameters and covariates; rename one of them.")
        self.x0_guess = dict(x0_guess or {})
        self.register_buffer(
            "pos_mask", torch.tensor([k in pos for k in self.names], dtype=torch.bool)
        )
        init = [math.log(params[k]) if k in pos else float(params[k]) for k in self.names]
        self.raw = nn.Parameter(torch.tensor(init, dtype=torch.float64))
        self.correction = correction

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        """Parameter values from raw (log or identity) coordinates; ``raw [..., P]``."""
        pos = self.pos_mask.tolist()
        if all(pos):
            return raw.exp()
        if not any(pos):
            return raw
        # per-column exp and cat: torch.where has no fast forward-mode AD rule (it falls
        # back to a Python decomposition that dominated the cost of a fit)
        return torch.cat([raw[..., i : i + 1].exp() if p else raw[..., i : i + 1]
                          for i, p in enumerate(pos)], dim=-1)  # fmt: skip

    @property
    def params(self) -> dict:
        """Current parameter values ``{name: 0-dim Tensor}`` (differentiable)."""
        vals = self.transform(self.raw)
        return {k: vals[i] for i, k in enumerate(self.names)}

    def values(self) -> dict:
        """Current parameter values as plain floats."""
        return {k: float(v.detach()) for k, v in self.params.items()}

    def forward(self, t, x):
        if self.covariates:
            raise InputError(
                f"this mechanism reads covariates {self.covariates}; only GreyBoxMLE "
                "(--model greybox_mle) supplies them."
            )
        dx = self.mechanism(t, x, self.params)
        if self.correction is not None:
            dx = dx + self.correction(t, x)
        return dx


MECHANISMS = {
    "lotka_volterra": (
        lotka_volterra_field,
        {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "delta": 1.0},
    ),
    "damped_oscillator": (damped_oscillator_field, {"omega": 1.0, "zeta": 0.5}),
}  # name -> (mechanism, default initial guesses)


def relative_error(found: dict, truth: dict) -> dict:
    """``|p̂ − p| / |p|`` per parameter name present in both."""
    return {k: abs(found[k] - truth[k]) / abs(truth[k]) for k in truth if k in found}


# --- pharmacokinetics -------------------------------------------------------------


class OneCompartmentPK(nn.Module):
    """Oral one-compartment PK with first-order absorption; doses are jumps.

    State ``(A_g, A_c)`` (amounts in gut and central compartment, dose units):
    ``A_g' = −k_a A_g``, ``A_c' = k_a A_g − k_e A_c``; observed concentration
    ``C = A_c / V``.  At each dose time the dose amount is added to ``A_g``.
    Single dose ⇒ the Bateman function
    ``C(t) = D k_a / (V (k_a − k_e)) (e^{−k_e t} − e^{−k_a t})`` (used in tests).

    The doses are keyed by batch row: every batch given to :meth:`loss` and
    :meth:`predict` must hold exactly the series of ``doses``, in that order (a batch
    with another number of rows raises :class:`~odenet.fit.data.SeriesMismatchError`).
    For some of the series, use :meth:`select` (the same parameters, those series'
    doses).  :func:`~odenet.fit.fit` keeps every row in its minibatches
    (``series_by_row``) and leaves the unselected ones out of the loss by their mask,
    so each series is always solved with its own doses.

    Parameters
    ----------
    doses : list of list of (time, amount)
        Per series (batch row order) its dosing events, sorted in time.
    ka, ke, V : float
        Initial guesses (1/time, 1/time, volume per dose unit of concentration).
    """

    trains_in_physical_units = True
    series_by_row = True  # fit() must not reorder or drop batch rows (see above)

    def __init__(self, doses, *, ka: float = 1.0, ke: float = 0.1, V: float = 1.0,
                 rtol: float = 1e-7, atol: float = 1e-9):  # fmt: skip
        super().__init__()
        self.doses = [sorted((float(t), float(a)) for t, a in d) for d in doses]
        if any(len(d) == 0 for d in self.doses):
            raise InputError("every series needs at least one dose (time, amount) in `doses`.")
        self.raw = nn.Parameter(torch.log(torch.tensor([ka, ke, V], dtype=torch.float64)))
        self.names = ["ka", "ke", "V"]
        self.tol = dict(rtol=rtol, atol=atol)

    def values(self) -> dict:
        return {k: float(v) for k, v in zip(self.names, self.raw.detach().exp())}

    def select(self, index) -> OneCompartmentPK:
        """The model for the series at positions ``index`` (e.g. the ``index`` of
        ``SeriesData.subset(index)``): the same parameters (shared, not copied), those
        series' doses in that order."""
        index = [int(i) for i in index]
        bad = [i for i in index if not 0 <= i < len(self.doses)]
        if bad:
            raise InputError(
                f"`index` {bad} out of range: the model has doses for {len(self.doses)} series."
            )
        out = OneCompartmentPK.__new__(OneCompartmentPK)
        nn.Module.__init__(out)
        out.doses = [list(self.doses[i]) for i in index]
        out.raw, out.names, out.tol = self.raw, self.names, dict(self.tol)
        return out

    def _check_rows(self, B: int, what: str) -> None:
        if B != len(self.doses):
            raise SeriesMismatchError(
                f"{what} has {B} series but the model has doses for {len(self.doses)}: its "
                "doses are keyed by batch row, so the rows must be the series of `doses`, in "
                "order. For some of them use `model.select(index)` with the index of "
                "`SeriesData.subset(index)`."
            )

    def _field(self, t, y):
        ka, ke, _ = self.raw.exp()
        g, c = y[..., 0], y[..., 1]
        return torch.stack([-ka * g, ka * g - ke * c], -1)

    def concentration(self, series: int, times: torch.Tensor) -> torch.Tensor:
        """``C`` [Q] of series ``series`` at increasing ``times`` [Q] (0 before the first dose)."""
        V = self.raw.exp()[2]
        times = times.to(self.raw.device)
        y = self.raw.new_zeros(2)
        t_now = None
        out = self.raw.new_zeros(len(times))
        pieces = []
        events = self.doses[series] + [(math.inf, 0.0)]
        for k in range(len(events) - 1):
            t_d, amount = events[k]
            if t_now is not None:
                y = odenet.solve(self._field, y, self.raw.new_tensor([t_now, t_d]),
                                 **self.tol).ys[-1]  # fmt: skip
            y = y + self.raw.new_tensor([amount, 0.0])
            t_now = t_d
            sel = (times > t_d) & (times <= events[k + 1][0])
            if bool(sel.any()):
                grid = torch.cat([times.new_tensor([t_d]), times[sel]])
                ys = odenet.solve(self._field, y, grid, **self.tol).ys[1:, 1] / V
                pieces.append((sel, ys))
        for sel, ys in pieces:
            out = out.masked_scatter(sel, ys)
        return out

    def loss(self, batch: IrregularBatch) -> torch.Tensor:
        self._check_rows(batch.times.shape[0], "the batch")
        return masked_mse(self._all(batch.times, batch.lengths), batch.values[..., 0],
                          batch.mask[..., 0])  # fmt: skip

    def _all(self, times, lengths):
        if all(len(d) == 1 for d in self.doses):
            return self._single_dose(times)
        rows = []
        for b in range(times.shape[0]):
            n = int(lengths[b])
            c = self.concentration(b, times[b, :n])
            rows.append(torch.cat([c, c.new_zeros(times.shape[1] - n)]))
        return torch.stack(rows)

    def _single_dose(self, times):
        """One per-sample solve for all series when each has a single dose (common case)."""
        times = times.to(self.raw.device)
        t_d = times.new_tensor([d[0][0] for d in self.doses])
        amount = self.raw.new_tensor([d[0][1] for d in self.doses])
        after = times > t_d[:, None]
        # times at or before the dose give C = 0; nudge them to keep each grid increasing
        ar = torch.arange(times.shape[1], device=times.device)
        tt = torch.maximum(times, t_d[:, None] + 1e-9 * (1 + ar))
        grid = torch.cat([t_d[:, None], tt], 1)
        y0 = torch.stack([amount, torch.zeros_like(amount)], -1)
        c = odenet.solve(self._field, y0, grid, **self.tol).ys[:, 1:, 1] / self.raw.exp()[2]
        return torch.where(after, c, torch.zeros_like(c))

    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        self._check_rows(context.times.shape[0], "the context")
        self._check_rows(query_times.shape[0], "`query_times`")
        query_times = query_times.to(self.raw.device)
        full = torch.full((query_times.shape[0],), query_times.shape[1], device=self.raw.device)
        return self._all(query_times, full)[..., None]


# --- maximum likelihood: parameters and initial states, Gauss–Newton -----------------


def _param_dict(field: GreyBoxField, raw, cov, columnar: bool) -> dict:
    """``p`` for the mechanism: parameter values (and covariates) by name.

    ``raw`` is ``[P]`` or ``[C, P]`` (shared parameters only: scalars / ``[C, 1, 1]``) or,
    with ``columnar``, ``[..., K, P]`` giving columns ``[..., K, 1]``; ``cov [K, C]``.
    """
    vals = field.transform(raw)
    if columnar:
        p = {k: vals[..., i : i + 1] for i, k in enumerate(field.names)}
        if cov is not None:
            p.update({k: cov[..., j : j + 1] for j, k in enumerate(field.covariates)})
        return p
    if vals.dim() == 2:
        # stacked shared parameters: [C, P] -> P values [C, 1, 1], one per stacked state
        # [C, K, D] (as [C, 1] they broadcast against the rows axis K, so the one-call
        # path failed its check and every column took a call of its own)
        return dict(zip(field.names, vals.T[:, :, None, None].unbind(0)))
    return {k: vals[i] for i, k in enumerate(field.names)}


class _Rows:
    """What each row of a batched solve needs besides its state: raw parameters and
    covariates (their last value at or before ``t``, from the row's series)."""

    def __init__(self, raw_rows: torch.Tensor, cov_times=None, cov_values=None):
        self.raw = raw_rows  # [K, P]
        self.cov_times, self.cov_values = cov_times, cov_values  # [K, T], [K, T, C]

    def covariates(self, t) -> torch.Tensor | None:
        if self.cov_values is None:
            return None
        K, T = self.cov_times.shape
        tt = torch.as_tensor(t, dtype=self.cov_times.dtype, device=self.cov_times.device)
        tt = tt.reshape(-1)
        tt = tt.expand(K) if tt.numel() == 1 else tt
        # 1e-12 relative: a solver stage exactly at an observation time sees that value
        le = self.cov_times <= (tt + 1e-12 * (1 + tt.abs()))[:, None]
        idx = (le.sum(1) - 1).clamp(0, T - 1)
        return self.cov_values[torch.arange(K, device=idx.device), idx]


class MechanismError(InputError):
    """A user mechanism is malformed (wrong output shape, unknown names, bad file)."""


def _check_output(f, x, where: str):
    if not isinstance(f, torch.Tensor) or f.shape != x.shape:
        got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise MechanismError(
            f"the mechanism returned {got} for a state of shape {tuple(x.shape)} ({where}); "
            "it must return dx/dt with the state's shape — with per-series parameters or "
            "covariates each p[name] is a column [..., K, 1]: use x[..., i:i+1] slices "
            "and torch.cat(..., -1)."
        )


class _RowField(nn.Module):
    """The mechanism with per-row parameters and covariates (no sensitivities)."""

    def __init__(self, field: GreyBoxField, rows: _Rows, columnar: bool):
        super().__init__()
        self.field, self.rows, self.columnar = field, rows, columnar

    def forward(self, t, x):
        raw = self.rows.raw if self.columnar else self.rows.raw[0]
        f = self.field.mechanism(t, x, _param_dict(self.field, raw, self.rows.covariates(t),
                                                   self.columnar))  # fmt: skip
        _check_output(f, x, "prediction")
        return f


class _Sensitivities(nn.Module):
    """Mechanism plus its forward variational equations, one row per segment.

    State ``[x, S]`` with ``S = ∂x/∂(s, raw) ∈ R^{D×(D+P)}`` (``s`` the segment's
    initial state, ``raw`` the row's parameters in learnt coordinates):
    ``S' = J_x S + [0 | J_raw]``.  Any mechanism written with torch operations works;
    three ways compute the right-hand side (``mode``):

    * ``"reverse"``: one taped call of the mechanism on ``D`` copies of the rows
      stacked on a leading axis (copy ``i`` seeds output ``i``; every copy and row
      gets its own parameter column, so the rows' ``J_raw`` do not mix) and one
      backward give ``J_x`` and ``J_raw``; then ``S' = J_x S + [0 | J_raw]``.
    * ``"forward"``: one call on dual numbers, the ``D + P`` tangent columns stacked on
      a leading axis (column ``c``: tangent ``S[:, :, c]`` in ``x``, ``e_{c−D}`` in raw).
    * ``"loop"``: one dual call per column, for a mechanism that does not broadcast
      over a leading axis.

    Forward mode is the cheaper of the two one-call modes for a mechanism whose every
    operation has dual operands; any operation between a dual and an operand without a
    tangent (a Python number, a constant tensor) takes torch's slow path (about 100×
    the op, see ``studies/benchmarks/sparse_jacobian.py``), and then reverse mode is.
    So the first call computes the loop's columns, checks each one-call mode against
    them, times the modes that pass (best of 3) and keeps the faster; the modes agree
    to round-off.

    :meth:`jacobian` is this system's Jacobian for an implicit method's Newton
    iteration: autograd cannot see through the sensitivities' own differentiation (it
    found zero, and Newton was a fixed-point iteration).
    """

    def __init__(self, field: GreyBoxField, D: int, rows: _Rows, columnar: bool):
        super().__init__()
        self.field, self.D, self.rows, self.columnar = field, D, rows, columnar
        self.P = field.raw.numel()
        self.mode: str | None = None  # decided on the first call
        self._reverse_ok: bool | None = None  # reverse mode's check, for jacobian
        self._tangent = None

    def _raw(self):
        return self.rows.raw if self.columnar else self.rows.raw[0]  # [K, P] or [P]

    def _dual_columns(self, t, x, S, stacked):
        D, P, field = self.D, self.P, self.field
        C, K = D + P, x.shape[0]
        raw = self._raw()
        cov = self.rows.covariates(t)
        if self._tangent is None or self._tangent.dtype != raw.dtype:
            self._tangent = torch.cat([torch.zeros(D, P, dtype=raw.dtype),
                                       torch.eye(P, dtype=raw.dtype)])  # fmt: skip
        tan = self._tangent  # [C, P]
        with torch.no_grad(), fwAD.dual_level():
            if cov is not None:
                # a dual covariate (zero tangent) of the operands' full shape: mixing a dual
                # with a broadcast plain tensor takes a slow decomposition path (~20x)
                cov = cov.expand(C, *cov.shape) if stacked else cov
                cov = fwAD.make_dual(cov.contiguous(), torch.zeros_like(cov))
            if stacked:
                xd = fwAD.make_dual(x.expand(C, K, D).clone(), S.permute(2, 0, 1).contiguous())
                if self.columnar:
                    rd = fwAD.make_dual(raw.expand(C, K, P).clone(),
                                        tan[:, None, :].expand(C, K, P).contiguous())  # fmt: skip
                else:
                    rd = fwAD.make_dual(raw.expand(C, P).clone(), tan)
                out = field.mechanism(t, xd, _param_dict(field, rd, cov, self.columnar))
                f, d = fwAD.unpack_dual(out)
                if f.shape != (C, K, D) or d is None:
                    raise ValueError("the mechanism does not broadcast over a leading axis")
                return f[0], d.permute(1, 2, 0)
            cols = []
            for c in range(C):
                xd = fwAD.make_dual(x, S[:, :, c])
                t_raw = tan[c].expand_as(raw).contiguous()
                rd = fwAD.make_dual(raw, t_raw)
                out = field.mechanism(t, xd, _param_dict(field, rd, cov, self.columnar))
                _check_output(out, x, "fit")
                f, dc = fwAD.unpack_dual(out)
                cols.append(dc if dc is not None else torch.zeros_like(f))
            return f, torch.stack(cols, dim=-1)

    def _jacobians(self, t, x, copies: bool, create_graph: bool = False):
        """``f [K, D]``, ``J_x [K, D, D]`` and ``J_raw [K, D, P]`` in reverse mode.

        With ``copies``, one taped call on ``D`` stacked copies and one backward (with
        ``create_graph``, differentiable in ``x``); without (a mechanism that does not
        broadcast over a leading axis), the plain call and one backward per output
        (``J_raw`` is then None: shared parameters would sum their rows)."""
        D, P, field = self.D, self.P, self.field
        K = x.shape[0]
        cov = self.rows.covariates(t)
        eye = torch.eye(D, dtype=x.dtype, device=x.device)
        with torch.enable_grad():
            if not copies:
                xs = x.detach().requires_grad_(True)
                out = field.mechanism(t, xs, _param_dict(field, self._raw(), cov, self.columnar))
                _check_output(out, x, "fit")
                if not out.requires_grad:  # f does not depend on x
                    return out.detach(), x.new_zeros(K, D, D), None
                rows = [torch.autograd.grad(out, xs, eye[i].expand(K, D), retain_graph=True,
                                            allow_unused=True)[0]
                        for i in range(D)]  # fmt: skip
                Jx = torch.stack([r if r is not None else x.new_zeros(K, D) for r in rows], 1)
                return out.detach(), Jx, None
            if create_graph:
                xs = x.expand(D, K, D)
            else:
                xs = x.detach().expand(D, K, D).clone().requires_grad_(True)
            # every copy and row its own parameter column, also when shared
            rs = self._raw().detach().expand(D, K, P).clone().requires_grad_(True)
            if cov is not None:
                cov = cov.expand(D, *cov.shape)
            out = field.mechanism(t, xs, _param_dict(field, rs, cov, columnar=True))
            if not isinstance(out, torch.Tensor) or out.shape != (D, K, D):
                raise ValueError("the mechanism does not broadcast over a leading axis")
            if not out.requires_grad:  # a constant field
                return out[0].detach(), x.new_zeros(K, D, D), x.new_zeros(K, D, P)
            seeds = eye[:, None, :].expand(D, K, D)
            gx, gr = torch.autograd.grad(out, (xs, rs), seeds, allow_unused=True,
                                         create_graph=create_graph)  # fmt: skip
        Jx = x.new_zeros(K, D, D) if gx is None else gx.permute(1, 0, 2)
        Jr = x.new_zeros(K, D, P) if gr is None else gr.permute(1, 0, 2)
        return (out[0] if create_graph else out[0].detach()), Jx, Jr

    def _columns(self, t, x, S, mode: str, create_graph: bool = False):
        """``f [K, D]`` and ``S' [K, D, D + P]`` by ``mode`` (``"reverse"``, ``"forward"``
        or ``"loop"``); with ``create_graph`` (reverse mode only) differentiable in ``x``
        and ``S``."""
        if mode == "reverse":
            f, Jx, Jr = self._jacobians(t, x, copies=True, create_graph=create_graph)
            return f, _variational(Jx, Jr, S)
        return self._dual_columns(t, x, S, stacked=mode == "forward")

    def _agrees(self, t, x, S, mode: str, reference) -> bool:
        """Whether ``mode`` runs on this mechanism and gives ``reference``'s columns."""
        try:
            got = self._columns(t, x, S, mode)
        except _NOT_STACKABLE:
            return False
        # round-off relative to the largest entry: cancellations in a mechanism with
        # large values must not send it to the loop
        return all(torch.allclose(a, b, rtol=1e-10, atol=1e-12 * max(1.0, float(b.abs().max())))
                   for a, b in zip(got, reference))  # fmt: skip

    def _choose_mode(self, t, x, S):
        """The loop's columns, after deciding :attr:`mode` (see the class docstring)."""
        reference = self._columns(t, x, S, "loop")
        self.mode, fastest = "loop", math.inf
        for mode in ("forward", "reverse"):
            if not self._agrees(t, x, S, mode, reference):
                continue
            seconds = min(_seconds(self._columns, t, x, S, mode) for _ in range(3))
            if seconds < fastest:
                self.mode, fastest = mode, seconds
        return reference

    def forward(self, t, y, mode: str | None = None, create_graph: bool = False):
        D, P = self.D, self.P
        x = y[:, :D]
        S = y[:, D:].reshape(-1, D, D + P)
        if mode is None and self.mode is None:
            f, dS = self._choose_mode(t, x, S)
        else:
            f, dS = self._columns(t, x, S, mode or self.mode, create_graph)
        return torch.cat([f, dS.reshape(x.shape[0], -1)], dim=1)

    def jacobian(self, t, y):
        """``[K, N, N]``, ``N = D(1 + D + P)``: ``∂[x', S']/∂[x, S]`` at ``y``, the Newton
        matrix's Jacobian for implicit methods (``solve``'s ``jac``).

        Autograd through reverse mode's taped ``J_x`` and ``J_raw`` (second derivatives
        of the mechanism), all rows in one call; where reverse mode's stacked copies do
        not serve (a mechanism served by the loop, or one whose reverse mode fails its
        check against the running mode, checked once per solve) the same one row at a
        time in the plain layout.  A mechanism without a double backward gets the block
        diagonal ``diag(J_x, J_x ⊗ I)`` (CVODES's simultaneous corrector); it drops
        ``∂S'/∂x`` below the diagonal, so Newton still converges but needs more
        iterations and fails more often.
        """
        if self._reverse_ok is None:  # checked once per solve, against the running mode
            x, S = y[:, : self.D], y[:, self.D :].reshape(y.shape[0], self.D, -1)
            self._reverse_ok = self.mode == "reverse" or (
                self.mode == "forward"
                and self._agrees(t, x, S, "reverse", self._columns(t, x, S, "forward"))
            )
        try:
            if self._reverse_ok:
                return batched_jacobian(lambda s, v: self(s, v, "reverse", True), t, y)
            cov = self.rows.covariates(t)
            return torch.cat([batched_jacobian(lambda s, v, k=k: self._row_rhs(s, v, k, cov),
                                               t[k : k + 1], y[k : k + 1])
                              for k in range(y.shape[0])])  # fmt: skip
        except _NOT_STACKABLE:  # an op of the mechanism without a double backward
            return self._block_diagonal_jacobian(t, y)

    def _row_rhs(self, t, v, k: int, cov):
        """Row ``k``'s right-hand side ``[1, N]`` at ``v [1, N]`` in the plain layout
        (any mechanism; ``t [1]``, ``cov`` all rows' covariates or None), differentiable
        in ``v``: :meth:`jacobian` where the stacked copies do not serve."""
        D, P = self.D, self.P
        x, S = v[:, :D], v[:, D:].reshape(1, D, D + P)
        raw = self.rows.raw[k : k + 1] if self.columnar else self.rows.raw[0]
        raw = raw.detach().clone().requires_grad_(True)  # the row's own parameters
        cov = None if cov is None else cov[k : k + 1]
        with torch.enable_grad():
            f = self.field.mechanism(t, x, _param_dict(self.field, raw, cov, self.columnar))
            _check_output(f, x, "fit")
            grads = [torch.autograd.grad(f[:, i].sum(), (x, raw), create_graph=True,
                                         allow_unused=True)
                     for i in range(D)]  # fmt: skip
        Jx = torch.stack([g if g is not None else x.new_zeros(1, D) for g, _ in grads], 1)
        Jr = torch.stack([g.reshape(1, P) if g is not None else x.new_zeros(1, P)
                          for _, g in grads], 1)  # fmt: skip
        return torch.cat([f, _variational(Jx, Jr, S).reshape(1, -1)], 1)

    def _block_diagonal_jacobian(self, t, y):
        D, C = self.D, self.D + self.P
        K = y.shape[0]
        _, Jx, _ = self._jacobians(t, y[:, :D], copies=bool(self._reverse_ok))
        J = y.new_zeros(K, D * (1 + C), D * (1 + C))
        J[:, :D, :D] = Jx
        eye = torch.eye(C, dtype=y.dtype, device=y.device)
        # S is stored row-major, S[i, c] at D + i·C + c: d S'[i, c] / d S[j, c'] = J_x[i, j] δ_cc'
        kron = Jx[:, :, None, :, None] * eye[None, None, :, None, :]
        J[:, D:, D:] = kron.reshape(K, D * C, D * C)
        return J


def _variational(Jx, Jr, S):
    """``S' = J_x S + [0 | J_raw]`` (``Jx [K, D, D]``, ``Jr [K, D, P]``, ``S [K, D, D + P]``),
    out of place so that it stays differentiable."""
    D = Jx.shape[-1]
    return torch.cat([Jx @ S[..., :D], Jx @ S[..., D:] + Jr], -1)


# what a mechanism raises on a layout it does not broadcast over (or without a double
# backward, for the Newton Jacobian)
_NOT_STACKABLE = (RuntimeError, ValueError, IndexError, TypeError)


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _segments(batch: IrregularBatch, node_every: int | None):
    """Split each series into shooting segments of ``node_every`` observations.

    Returns a list of ``(b, j0, j1, has_next)``: segment of series ``b`` starting at
    observation ``j0`` (its node) and scoring observations ``j0 … j1−1``; if
    ``has_next`` the state at ``t_{j1}`` must equal the next segment's node state.
    """
    segs = []
    for b in range(batch.times.shape[0]):
        n = int(batch.lengths[b])
        m = n if node_every is None else max(1, int(node_every))
        starts = list(range(0, n, m))
        if len(starts) > 1 and n - starts[-1] < 2:  # a last segment of 1 point: merge it
            starts.pop()
        for i, j0 in enumerate(starts):
            j1 = starts[i + 1] if i + 1 < len(starts) else n
            segs.append((b, j0, j1, i + 1 < len(starts)))
    return segs


class _Layout:
    """Where each unknown of a least-squares stage lives in the vector ``u``.

    ``u = [shared raw parameters (unless fixed)] + [per-series raw parameters, series
    by series] + [free components of every segment's node state]``; a series' first
    node omits the pinned initial states.
    """

    def __init__(self, segs, B, S, P, shared, per, pinned, fix_shared):
        self.segs, self.B, self.S, self.P = segs, B, S, P
        self.shared, self.per, self.pinned = shared, per, pinned
        self.n_sh = 0 if fix_shared else len(shared)
        self.n_per = B * len(per)
        off = self.n_sh + self.n_per
        self.node_cols = []  # per segment: [S] u-index of each state component or -1
        for _, j0, _, _ in segs:
            cols = np.full(S, -1)
            for s in range(S):
                if j0 == 0 and s in pinned:
                    continue
                cols[s] = off
                off += 1
            self.node_cols.append(cols)
        self.n = off
        self.cols = []  # per segment: [S + P] u-index of each column of S, or -1
        for k, (b, _, _, _) in enumerate(segs):
            c = np.full(S + P, -1)
            c[:S] = self.node_cols[k]
            if not fix_shared:
                for i, j in enumerate(shared):
                    c[S + j] = i
            for i, j in enumerate(per):
                c[S + j] = self.n_sh + b * len(per) + i
            self.cols.append(c)

    def unpack(self, u, raw_fixed, node_guess):
        """(raw_rows [K, P], nodes [K, S]) as tensors; ``node_guess [K, S]`` supplies pins."""
        K = len(self.segs)
        raw = np.tile(raw_fixed, (K, 1))
        if self.n_sh:
            raw[:, self.shared] = u[: self.n_sh]
        if self.per:
            per = u[self.n_sh : self.n_sh + self.n_per].reshape(self.B, len(self.per))
            bs = [b for b, _, _, _ in self.segs]
            raw[:, self.per] = per[bs]
        nodes = np.array(node_guess, dtype=float, copy=True)
        for k, cols in enumerate(self.node_cols):
            free = cols >= 0
            nodes[k, free] = u[cols[free]]
        return torch.as_tensor(raw), torch.as_tensor(nodes)


def _penalised(rj, lay, penalty, free_mu: bool):
    """``rj`` with the random-effect prior residuals ``λ_a (raw_{b,a} − μ_a)`` appended
    (one per series and random effect; ``μ`` the last unknowns when ``free_mu``, else
    fixed at ``penalty["mu"]``), so Levenberg–Marquardt minimises the penalised
    least-squares objective of a mixed model.  ``rj`` itself when ``penalty`` is None."""
    if penalty is None:
        return rj
    idx, lam = penalty["idx"], penalty["lam"]
    n_per, nr = len(lay.per), len(idx)
    rows = np.arange(lay.B * nr)
    cols = np.array([lay.n_sh + b * n_per + i for b in range(lay.B) for i in idx], dtype=int)
    w = np.tile(lam, lay.B)

    def wrapped(v):
        r, J = rj(v[: lay.n])
        mu = v[lay.n :] if free_mu else penalty["mu"]
        rp = w * (v[cols] - np.tile(mu, lay.B))
        Jp = np.zeros((len(rows), len(v)))
        Jp[rows, cols] = w
        if free_mu:
            Jp[rows, lay.n + np.tile(np.arange(nr), lay.B)] = -w
            J = np.hstack([J, np.zeros((J.shape[0], nr))])
        return np.concatenate([r, rp]), np.vstack([J, Jp])

    return wrapped


def _check_doses(doses, dose_state) -> list:
    """``doses`` as lists of ``(time, amount[, state])`` with finite numbers."""
    out = []
    for b, series in enumerate(doses):
        rows = []
        for d in series:
            d = tuple(d)
            ok = len(d) in (2, 3) and all(isinstance(x, (int, float)) and math.isfinite(x)
                                          for x in map(_num, d[:2]))  # fmt: skip
            if not ok:
                raise InputError(
                    f"`doses` series {b}: {d!r} is not (time, amount) or (time, amount, state) "
                    "with finite numbers."
                )
            if len(d) == 2 and dose_state is None:
                raise InputError(
                    "`doses` given as (time, amount) need `dose_state=` (the state the dose "
                    "enters, e.g. 'gut'), or give (time, amount, state)."
                )
            rows.append((_num(d[0]), _num(d[1]), *d[2:]))
        out.append(sorted(rows, key=lambda r: r[0]))
    return out


def _num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


class GreyBoxMLE(nn.Module):
    """Grey-box ODE fitted by maximum likelihood over parameters *and* initial states.

    Observations ``y_{bi} = H x_b(t_{bi}) + ε``, ``ε ~ N(0, σ² I)`` i.i.d. (``H`` picks
    the observed states), with ``x_b' = f(t, x_b; p_b, u_b(t))``: the estimate
    minimises ``Σ_{b,i} ‖m_{bi} ⊙ (H x_b(t_{bi}) − y_{bi})‖²`` jointly over the shared
    parameters, every series' own parameters (``per_series``) and every series' initial
    state (except the ``fixed_x0`` components).  :meth:`gauss_newton` solves it by
    Levenberg–Marquardt with exact Jacobians from the forward variational equations,
    in two stages:

    1. *multiple shooting* (Bock): each series is cut into segments of
       ``node_every`` observations whose initial states are unknowns too (started
       at the observations), with continuity defects ``w (x_k(τ_{k+1}) − s_{k+1})``
       as extra residuals — short segments keep the problem nearly linear far from
       the optimum;
    2. *single shooting* from the stage-1 solution (one segment per series): the
       exact least-squares problem above, continuity exact by construction.

    The least squares is numpy: :meth:`gauss_newton`, :meth:`loss`, :meth:`predict`,
    :meth:`band` and :meth:`initial_states` compute on the CPU wherever the model is,
    and return their tensors on the model's device.

    Uncertainty: at the optimum, the Gauss–Newton covariance ``σ̂² (JᵀJ)⁻¹`` (with
    ``σ̂² = RSS / (N − n_unknowns)``), computed from the SVD of the column-scaled
    Jacobian *without* truncation — a direction the data do not determine gives an
    infinite standard error, never a small one.  :attr:`info` reports the Jacobian's
    rank and condition number, the parameters (and initial states) that are not
    identifiable or only weakly identified, by name, and why the solver stopped.

    ``predict(context, q)`` re-estimates each context series' initial state (and its
    own parameters, with ``per_series``) with the shared parameters fixed, and
    integrates from it, so predictions use every context observation.
    :meth:`band` gives delta-method confidence or prediction bands.

    Data layout: the batch's channels are the observed states followed by the
    covariates (``field.covariates``, in that order).  ``channels`` names the
    batch's data channels when they are a subset of ``field.states`` (latent states).

    Parameters
    ----------
    field : GreyBoxField
        The mechanism with its parameter guesses (no neural correction).
    node_every : int or None
        Observations per multiple-shooting segment in stage 1 (None: skip stage 1).
    continuity_weight : float
        ``w`` of the stage-1 continuity residuals (data units).
    per_series : iterable of str
        Parameters estimated separately for every series (the rest are shared).
    fixed_x0 : dict[str, float]
        Initial states pinned to a known value in every series (by state name).
    channels : list of str, optional
        Names of the observed channels (default: ``field.states``, or all channels).
    random : iterable of str
        Per-series parameters that are random effects: ``raw_b = μ + η_b``,
        ``η_b ~ N(0, ω²)`` in learnt coordinates (log-normal for positive parameters),
        with the population value ``μ`` and spread ``ω`` estimated too (see
        :meth:`_fit_random`); predictions for new series shrink toward ``μ``.
    doses : list of lists, optional
        Bolus doses, one list per series in the batch's row order (the same order when
        predicting): ``(time, amount)`` into ``dose_state``, or ``(time, amount,
        state)``.  At a dose time the state jumps by the amount; an observation at a
        dose time is taken just before the dose; a series whose first dose precedes its
        first observation starts at that dose (its initial state is the state before it,
        e.g. pinned at 0).
    dose_state : str, optional
        The state that ``(time, amount)`` doses enter (e.g. the gut compartment).
    random_rounds : int
        Maximum number of variance-component updates of a random-effects fit.
    method, rtol, atol, max_steps :
        Passed to :func:`odenet.solve` for the state-plus-sensitivity system.  An
        implicit method (``"radau_iia5"``, ``"bdf"``, ``"kvaerno5"``: a stiff mechanism)
        gets that system's Jacobian for its Newton iteration (see ``_Sensitivities``).
    """

    trains_in_physical_units = True

    def __init__(
        self,
        field: GreyBoxField,
        *,
        node_every: int | None = 4,
        continuity_weight: float = 10.0,
        per_series=(),
        random=(),
        fixed_x0: dict | None = None,
        channels: list | None = None,
        doses: list | None = None,
        dose_state: str | None = None,
        method: str = "dopri5",
        random_rounds: int = 8,
        rtol: float = 1e-7,
        atol: float = 1e-9,
        max_steps: int = 5000,
    ):
        super().__init__()
        if not isinstance(field, GreyBoxField) or field.correction is not None:
            raise InputError(
                "`field` must be a GreyBoxField without a neural correction (Gauss–Newton "
                "needs the few mechanistic parameters only); fit hybrids with ShootingODE."
            )
        if node_every is not None and (not isinstance(node_every, int) or node_every < 2):
            raise InputError(f"`node_every` must be an integer ≥ 2 or None, got {node_every!r}.")
        random = list(random)
        # a random effect is a per-series parameter with a population distribution
        per_series = list(per_series) + [k for k in random if k not in per_series]
        for arg, names in (("random", random), ("per_series", per_series)):
            unknown = [k for k in names if k not in field.names]
            if unknown:
                raise InputError(
                    f"`{arg}` names {unknown}, which are not parameters of the mechanism "
                    f"({field.names})."
                )
        if not isinstance(random_rounds, int) or random_rounds < 1:
            raise InputError(f"`random_rounds` must be an integer ≥ 1, got {random_rounds!r}.")
        self.field = field
        self.node_every = node_every
        self.continuity_weight = float(continuity_weight)
        # a trial step of Levenberg–Marquardt may make the ODE stiff or explode: a bounded
        # step budget turns that into a rejected step within seconds instead of minutes
        self.solver = dict(method=method, rtol=rtol, atol=atol, max_steps=max_steps)
        self.per_series = per_series
        self.random = random
        self.random_rounds = random_rounds
        self.dose_state = dose_state
        self.doses = None if doses is None else _check_doses(doses, dose_state)
        self.fixed_x0 = {str(k): float(v) for k, v in (fixed_x0 or {}).items()}
        states = field.states
        if states is not None:
            bad = [k for k in self.fixed_x0 if k not in states]
            if bad:
                raise InputError(
                    f"`fixed_x0` names {bad}, which are not states; the states are {states}."
                )
            if channels is not None:
                extra = [c for c in channels if c not in states]
                if extra:
                    raise InputError(
                        f"data channel(s) {extra} are not states of the mechanism ({states}); "
                        "pass covariates as covariates, or drop the column(s)."
                    )
        self.channels = None if channels is None else list(channels)
        P = field.raw.numel()
        self.register_buffer("raw_cov", torch.full((P, P), math.nan, dtype=torch.float64))
        self.register_buffer("sigma", torch.tensor(math.nan, dtype=torch.float64))
        # per-series raw parameters and initial states of the training series
        self.register_buffer("series_raw", torch.zeros(0, len(per_series), dtype=torch.float64))
        self.register_buffer("x0", torch.zeros(0, 0, dtype=torch.float64))
        # between-series standard deviation of each random effect (learnt coordinates); a
        # buffer only with random effects, so other checkpoints keep their layout
        if random:
            self.register_buffer("omega", torch.full((len(random),), math.nan,
                                                     dtype=torch.float64))  # fmt: skip
        else:
            self.omega = None
        self.info: dict = {}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # these buffers are sized by the training data; take the checkpoint's size (on this
        # module's device: a checkpoint loads on the CPU into a model that may not be)
        for name in ("series_raw", "x0"):
            if prefix + name in state_dict:
                setattr(
                    self,
                    name,
                    torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device),
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- layout of states, channels and covariates ------------------------------------
    @property
    def columnar(self) -> bool:
        return bool(self.per_series or self.field.covariates)

    def _dims(self, batch: IrregularBatch):
        """(state names, observed state index per data channel, first covariate channel)."""
        C = len(self.field.covariates)
        D = batch.values.shape[-1] - C
        if D < 1:
            raise InputError(
                f"the data have {batch.values.shape[-1]} channel(s) but the mechanism reads "
                f"{C} covariate(s) {self.field.covariates}: no channel is left to fit."
            )
        states = self.field.states
        if states is None:
            return [f"x{i}" for i in range(D)], list(range(D)), D
        chans = self.channels or (states if D == len(states) else None)
        if chans is None or len(chans) != D:
            raise InputError(
                f"the data have {D} observed channel(s) but the mechanism has states "
                f"{states}; name the observed ones with `channels=` (--channels)."
            )
        return states, [states.index(c) for c in chans], D

    def _pinned(self, states) -> dict:
        pins = {}
        for k, v in self.fixed_x0.items():
            if k in states:
                pins[states.index(k)] = v
            elif k.isdigit() and int(k) < len(states):
                pins[int(k)] = v
            else:
                raise InputError(f"`fixed_x0` names {k!r}, not a state of {states}.")
        return pins

    def _index(self):
        shared = [i for i, k in enumerate(self.field.names) if k not in self.per_series]
        per = [self.field.names.index(k) for k in self.per_series]
        return shared, per

    # --- the residual and its Jacobian -------------------------------------------------
    def _solve_rows(self, grid, nodes, raw_rows, cov, sens: bool = True, events=None):
        """Solve every row on its grid ``[K, M]``: X ``[K, M, S]`` (and S ``[K, M, S, S+P]``).

        ``events`` (dosing, see :meth:`_events`): per row ``(t_start, [(t, state, amount),
        …])``; the row then starts at ``t_start ≤ grid[k, 0]`` from ``nodes[k]`` and
        its state jumps by each amount at each time (a grid point at a dose time sees
        the state just before the dose)."""
        K, S = nodes.shape
        P = raw_rows.shape[1]
        y0 = nodes
        if sens:
            S0 = torch.zeros(K, S, S + P, dtype=nodes.dtype)
            S0[:, :, :S] = torch.eye(S, dtype=nodes.dtype)
            y0 = torch.cat([nodes, S0.reshape(K, -1)], dim=1)
        if events is None:
            ys = self._solve_piece(grid, y0, raw_rows, cov, sens, S)
        else:
            ys = self._solve_dosed(grid, y0, raw_rows, cov, sens, events, S)
        if not sens:
            return ys
        return ys[..., :S], ys[..., S:].reshape(K, -1, S, S + P)

    def _solve_piece(self, grid, y0, raw_rows, cov, sens: bool, S: int):
        """One per-sample solve of the state (and, with ``sens``, its sensitivities)."""
        rows = _Rows(raw_rows, *cov) if cov is not None else _Rows(raw_rows)
        with torch.no_grad():
            if not sens:
                return odenet.solve(_RowField(self.field, rows, self.columnar), y0, grid,
                                    **self.solver).ys  # fmt: skip
            sys_ = _Sensitivities(self.field, S, rows, self.columnar)
            sys_.mode = getattr(self, "_sens_mode", None)  # decided once per model
            # an implicit method's Newton needs the Jacobian; autograd cannot see through
            # the sensitivities' own differentiation (it would find zero: a fixed-point
            # iteration that crawls on non-stiff and fails on stiff mechanisms)
            implicit = getattr(resolve_method(self.solver["method"], False), "is_implicit", False)
            ys = odenet.solve(sys_, y0, grid, jac=sys_.jacobian if implicit else None,
                              **self.solver).ys  # fmt: skip
            self._sens_mode = sys_.mode
        return ys

    def _solve_dosed(self, grid, y0, raw_rows, cov, sens, events, S):
        """Piecewise solve between dose times: round ``p`` integrates every row that has
        a ``p``-th piece from its ``p``-th boundary (start or dose) to the next, in one
        per-sample solve; at a boundary the dose is added to the state (a bolus does not
        depend on the unknowns, so the sensitivities pass through unchanged)."""
        K, M = grid.shape
        out = y0.new_zeros(K, M, y0.shape[1])
        state = y0.clone()
        g = grid.numpy()
        plans = []
        for k, (t_start, ev) in enumerate(events):
            bounds = [t_start, *sorted({t for t, _, _ in ev if t > t_start})]
            plans.append(bounds)
            at_start = g[k] <= t_start  # grid points at the start: the state before any dose
            out[k, at_start] = y0[k]
        for p in range(max(len(b) for b in plans)):
            act = [k for k in range(K) if p < len(plans[k])]
            grids, where = [], []
            for k in act:
                lo = plans[k][p]
                hi = plans[k][p + 1] if p + 1 < len(plans[k]) else math.inf
                for t, s, a in events[k][1]:
                    if t == lo:
                        state[k, s] += a
                pts = np.nonzero((g[k] > lo) & (g[k] <= hi))[0]
                gk = [lo, *g[k, pts]] + ([hi] if math.isfinite(hi) and hi not in g[k, pts] else [])
                end = len(gk) - 1 if math.isfinite(hi) else None
                if math.isfinite(hi) and hi in g[k, pts]:
                    end = 1 + int(np.nonzero(g[k, pts] == hi)[0][0])
                grids.append(gk)
                where.append((pts, end))
            L = max(2, max(len(x) for x in grids))
            rows_g = []
            for gk in grids:  # pad: strictly increasing times past the piece's end
                last = gk[-1]
                rows_g.append(gk + [last + 1e-6 * (1 + abs(last)) * i
                                    for i in range(1, L - len(gk) + 1)])  # fmt: skip
            sub_cov = None if cov is None else (cov[0][act], cov[1][act])
            ys = self._solve_piece(torch.tensor(rows_g, dtype=grid.dtype), state[act],
                                   raw_rows[act], sub_cov, sens, S)  # fmt: skip
            for i, k in enumerate(act):
                pts, end = where[i]
                out[k, torch.as_tensor(pts, dtype=torch.long)] = ys[i, 1 : 1 + len(pts)]
                if end is not None:
                    state[k] = ys[i, end]
        return out

    def _events(self, batch, rows, states):
        """Dose events of solve rows ``rows`` = ``[(b, t_lo, t_hi)]`` (series ``b``; doses
        at ``t_lo ≤ t < t_hi``; ``t_lo = -inf`` for a row that starts the series, which then
        starts at its first dose if that precedes its first observation), or None."""
        if self.doses is None:
            return None
        B = batch.times.shape[0]
        if len(self.doses) != B:
            raise InputError(
                f"`doses` lists {len(self.doses)} series but the data have {B}; give one "
                "list of doses per series, in the batch's row order (an empty list for none)."
            )
        idx = {s: i for i, s in enumerate(states)}
        out = []
        for b, lo, hi in rows:
            ev = []
            for d in self.doses[b]:
                t, a = float(d[0]), float(d[1])
                name = d[2] if len(d) > 2 else self.dose_state
                if name not in idx:
                    raise InputError(f"a dose goes to state {name!r}, not one of {states}.")
                if lo <= t < hi:
                    ev.append((t, idx[name], a))
            t0 = float(batch.times[b, 0])
            start = min([t0] + [t for t, _, _ in ev]) if lo == -math.inf else lo
            out.append((start, ev))
        return out

    def _covariate_rows(self, batch, segs, D):
        if not self.field.covariates:
            return None
        filled = _covariate_fill(batch, D)
        idx = [b for b, _, _, _ in segs]
        return batch.times[idx], filled[idx]

    def _residuals(self, batch, lay, u, raw_fixed, node_guess, weight, obs, D, cov):
        """Residual vector r [N] and Jacobian J [N, n_u] at unknowns ``u`` (numpy)."""
        segs = lay.segs
        raw_rows, nodes = lay.unpack(u, raw_fixed, node_guess)
        M = max(j1 - j0 + int(nxt) for _, j0, j1, nxt in segs)
        grids = []
        for b, j0, j1, nxt in segs:
            g = batch.times[b, j0 : j1 + int(nxt)]
            pad = g[-1] + 1e-6 * torch.arange(1, M - len(g) + 1, dtype=g.dtype)
            grids.append(torch.cat([g, pad]))
        events = self._events(batch, [
            (b, -math.inf if j0 == 0 else float(batch.times[b, j0]),
             float(batch.times[b, j1 - 1 + int(nxt)])) for b, j0, j1, nxt in segs],
            self._dims(batch)[0])  # fmt: skip
        X, Sn = self._solve_rows(torch.stack(grids), nodes, raw_rows, cov, events=events)
        X, Sn, nodes = X.numpy(), Sn.numpy(), nodes.numpy()
        rows_r, rows_J = [], []
        n_u = lay.n
        for k, (b, j0, j1, nxt) in enumerate(segs):
            n = j1 - j0
            m = batch.mask[b, j0:j1, :D].numpy()  # [n, D]
            r = (X[k, :n][:, obs] - batch.values[b, j0:j1, :D].numpy()) * m
            cols = lay.cols[k]
            ok = cols >= 0
            J = np.zeros((n, D, n_u))
            J[:, :, cols[ok]] = Sn[k, :n][:, obs][..., ok] * m[..., None]
            rows_r.append(r.reshape(-1))
            rows_J.append(J.reshape(n * D, n_u))
            if nxt:
                r = weight * (X[k, n] - nodes[k + 1])
                J = np.zeros((lay.S, n_u))
                J[:, cols[ok]] = weight * Sn[k, n][:, ok]
                nc = lay.node_cols[k + 1]
                J[np.arange(lay.S)[nc >= 0], nc[nc >= 0]] -= weight
                rows_r.append(r)
                rows_J.append(J)
        return np.concatenate(rows_r), np.concatenate(rows_J)

    def _levenberg_marquardt(self, evaluate_rj, u, max_iter, log_mask=None, rel_tol=1e-9):
        failure = []  # why the last evaluation failed, for the message at the start

        def evaluate(v):
            failure.clear()
            try:
                r, J = evaluate_rj(v)
            except odenet.OdenetError as e:
                cause = e if isinstance(e, MechanismError) else e.__cause__
                if isinstance(cause, MechanismError):  # a bug in the mechanism, not a bad step
                    raise cause from None
                failure.append(f"{type(e).__name__}: {e}")
                return math.inf, None, None  # the trial parameters blew the ODE up
            c = 0.5 * float(r @ r)
            if math.isfinite(c) and np.isfinite(J).all():
                return c, r, J
            failure.append("non-finite residuals or sensitivities")
            return math.inf, None, None

        cost, r, J = evaluate(u)
        if J is None:
            # the error itself: a mechanism that raises (a misspelt parameter name) was
            # reported as a bad guess, and no guess could ever help
            raise odenet.SolverError(
                "the initial guess makes the ODE fail ("
                f"{failure[0] if failure else 'unknown error'}); if that names a bug in the "
                "mechanism, fix it; otherwise give parameter guesses closer to the data."
            )
        lam, it, reason = 1e-3, 0, "max_iter"
        if len(u) == 0:  # everything pinned or fixed: nothing to estimate
            max_iter, reason = 0, "converged"
        while it < max_iter:
            it += 1
            H, g = J.T @ J, J.T @ r
            d = np.diag(H).copy()
            # Marquardt's scaling with a floor: a nearly flat direction still gets damped
            d = np.maximum(d, 1e-10 * max(d.max(), 1e-300))
            d[d == 0] = 1.0
            improved = False
            for _ in range(12):
                try:
                    step = np.linalg.solve(H + lam * np.diag(d), -g)
                except np.linalg.LinAlgError:
                    step = np.linalg.lstsq(H + lam * np.diag(d), -g, rcond=None)[0]
                if log_mask is not None and log_mask.any():
                    # a box on the log-parameters (at most a factor e per step): a direction
                    # the data barely see must not throw a parameter to 1e16 in one step
                    step[log_mask] = np.clip(step[log_mask], -1.0, 1.0)
                c2, r2, J2 = evaluate(u + step)
                if c2 < cost:
                    improved = True
                    break
                lam *= 4.0
            if not improved:
                reason = "no_decrease"  # a (local) minimum to the solver's accuracy
                break
            rel = (cost - c2) / max(cost, 1e-300)
            u, cost, r, J = u + step, c2, r2, J2
            lam = max(lam / 3.0, 1e-12)
            if rel < rel_tol or np.abs(step).max() < 1e-10 * (1 + np.abs(u).max()):
                reason = "converged"
                break
        self._last_reason = reason
        return u, cost, r, J, it

    def _estimate(self, batch, *, fix_shared: bool, max_iter: int, series_raw=None,
                  multiple_shooting: bool = True, penalty=None, start=None):  # fmt: skip
        """Two-stage LM.  Returns a dict with the single-shooting ``u``, ``r``, ``J``,
        its layout, ``iterations``, per-series raw parameters and initial states.

        ``penalty`` (random effects, see :meth:`_penalty`) appends the prior residuals
        ``λ_a (raw_{b,a} − μ_a)`` and, unless ``fix_shared``, the population values
        ``μ`` as the last unknowns; ``start`` (``series_raw``, ``x0``) warm-starts the
        single-shooting stage."""
        states, obs, D = self._dims(batch)
        S, B = len(states), batch.times.shape[0]
        pins = self._pinned(states)
        shared, per = self._index()
        P = self.field.raw.numel()
        raw0 = self.field.raw.detach().clone().numpy()
        # starting guesses only (re-estimated): a leading gap may take the first value
        filled = fill_locf(batch, backward=True)[..., :D].numpy()
        lat = [s for s in range(S) if s not in obs]
        guess = np.zeros(S)
        for s in lat:
            guess[s] = float(self.field.x0_guess.get(states[s], 0.0))
        # doses are checked here, once: inside Levenberg–Marquardt an error is a failed step
        self._events(batch, [(b, -math.inf, math.inf) for b in range(B)], states)
        if penalty is None and fix_shared:
            penalty = self._penalty()
        free_mu = penalty is not None and not fix_shared
        mu = [penalty["mu"]] if free_mu else []

        def node_guess(segs):
            g = np.tile(guess, (len(segs), 1))
            for k, (b, j0, _, _) in enumerate(segs):
                g[k, obs] = filled[b, j0]
                if j0 == 0:
                    for s, v in pins.items():
                        g[k, s] = v
            return g

        if start is not None:
            series_raw = start["series_raw"]
        per0 = np.tile(raw0[per], (B, 1)) if series_raw is None else np.asarray(series_raw)
        head = ([] if fix_shared else [raw0[shared]]) + [per0.reshape(-1)]
        total = 0
        first_nodes = None
        if self.node_every is not None and multiple_shooting and start is None:
            segs = _segments(batch, self.node_every)
            lay = _Layout(segs, B, S, P, shared, per, pins, fix_shared)
            ng = node_guess(segs)
            cov = self._covariate_rows(batch, segs, D)
            u = np.concatenate([*head, *[ng[k, c >= 0] for k, c in enumerate(lay.node_cols)],
                                *mu])  # fmt: skip

            def rj1(v, lay=lay, ng=ng, cov=cov):
                return self._residuals(batch, lay, v, raw0, ng, self.continuity_weight, obs, D,
                                       cov)  # fmt: skip

            # stage 1 only has to bring the unknowns near the optimum: a loose tolerance
            rj1 = _penalised(rj1, lay, penalty, free_mu)
            u, _, _, _, n = self._levenberg_marquardt(rj1, u, max_iter,
                                                      self._log_mask(lay, free_mu),
                                                      rel_tol=1e-5)  # fmt: skip
            total += n
            head = [u[: lay.n_sh + lay.n_per]]
            mu = [u[lay.n :]] if free_mu else []
            first = [k for k, s in enumerate(segs) if s[1] == 0]
            first_nodes = [u[lay.node_cols[k][lay.node_cols[k] >= 0]] for k in first]
        segs = _segments(batch, None)
        lay = _Layout(segs, B, S, P, shared, per, pins, fix_shared)
        ng = node_guess(segs)
        if start is not None:
            first_nodes = [np.asarray(start["x0"])[k, c >= 0] for k, c in enumerate(lay.node_cols)]
        if first_nodes is None:
            first_nodes = [ng[k, c >= 0] for k, c in enumerate(lay.node_cols)]
        cov = self._covariate_rows(batch, segs, D)
        u = np.concatenate([*head, *first_nodes, *mu])

        def rj(v):
            return self._residuals(batch, lay, v, raw0, ng, 1.0, obs, D, cov)

        rj = _penalised(rj, lay, penalty, free_mu)
        u, cost, r, J, n = self._levenberg_marquardt(rj, u, max_iter,
                                                     self._log_mask(lay, free_mu))  # fmt: skip
        total += n
        raw_rows, nodes = lay.unpack(u[: lay.n], raw0, ng)
        if not fix_shared:
            self.field.raw.data[shared] = torch.as_tensor(u[: lay.n_sh])
            if free_mu:  # the population values live in the per-series parameters' slots
                self.field.raw.data[[per[i] for i in penalty["idx"]]] = torch.as_tensor(u[lay.n :])
        n_pen = 0 if penalty is None else B * len(penalty["idx"])
        return {
            "u": u, "r": r, "J": J, "layout": lay, "iterations": total, "rj": rj,
            "series_raw": raw_rows[:, per].clone(), "x0": nodes, "states": states,
            "obs": obs, "D": D, "node_guess": ng, "cov": cov, "n_data": len(r) - n_pen,
        }  # fmt: skip

    def _penalty(self, lam=None) -> dict | None:
        """Random-effect prior of the fitted model (``None`` without random effects or
        before a fit): positions ``idx`` in ``per_series``, population values ``mu``
        (learnt coordinates) and weights ``λ = σ̂ / ω``, or the weights ``lam`` given."""
        if not self.random:
            return None
        if lam is None:
            lam = float(self.sigma) / self.omega.numpy()
            if not np.isfinite(lam).all():
                return None
        idx = [self.per_series.index(k) for k in self.random]
        per = self._index()[1]
        mu = self.field.raw.detach().numpy()[[per[i] for i in idx]].copy()
        return {"idx": idx, "mu": mu, "lam": np.asarray(lam, dtype=float)}

    def _log_mask(self, lay, free_mu: bool = False) -> np.ndarray:
        """Which unknowns are log-parameters (positive ones)."""
        pos = self.field.pos_mask.numpy()
        m = np.zeros(lay.n, bool)
        m[: lay.n_sh] = pos[lay.shared][: lay.n_sh]
        for b in range(lay.B):
            o = lay.n_sh + b * len(lay.per)
            m[o : o + len(lay.per)] = pos[lay.per]
        if free_mu:
            idx = [self.per_series.index(k) for k in self.random]
            m = np.concatenate([m, pos[[lay.per[i] for i in idx]]])
        return m

    # --- uncertainty ---------------------------------------------------------------
    def _unknown_names(self, lay, states, ids=None) -> list:
        names = [self.field.names[j] for j in lay.shared][: lay.n_sh]
        sid = ids if ids is not None else list(range(lay.B))
        for b in range(lay.B):
            names += [f"{self.field.names[j]}[{sid[b]}]" for j in lay.per]
        for k, cols in enumerate(lay.node_cols):
            b = lay.segs[k][0]
            names += [f"x0.{states[s]}[{sid[b]}]" for s in range(lay.S) if cols[s] >= 0]
        return names

    @staticmethod
    def _covariance(J, sigma2):
        """σ² (JᵀJ)⁻¹ by the SVD of the column-scaled Jacobian, untruncated (a null
        direction gives infinite variance), its condition number and null vectors."""
        norms = np.linalg.norm(J, axis=0)
        zero = norms <= 1e-300
        scale = np.where(zero, 1.0, norms)
        _, s, Vt = np.linalg.svd(J / scale, full_matrices=False)
        s_rel = s / s[0] if s[0] > 0 else np.zeros_like(s)
        null = s_rel < 1e-8  # beyond ~1e8 the covariance is round-off, not information
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            inv_s2 = np.where(null, np.inf, 1.0 / s**2)
            cov_n = (Vt.T * inv_s2) @ Vt
            # an inf times a zero component of V gives nan: that entry does not see the null
            # direction; recompute on the identified subspace and put inf where it does
            cov_fin = (Vt[~null].T / s[~null] ** 2) @ Vt[~null]
            hit = (np.abs(Vt[null]) > 1e-3).any(axis=0) if null.any() else np.zeros(len(s), bool)
            cov_n = np.where(hit[:, None] | hit[None, :], np.inf, cov_fin)
            cov = sigma2 * cov_n / np.outer(scale, scale)
        cov[zero, :] = np.inf
        cov[:, zero] = np.inf
        cond = float(1 / s_rel[-1]) if s_rel[-1] > 0 else math.inf
        rank = int((~null).sum())
        return cov, cond, rank, Vt[null], hit | zero

    def _identifiability(self, cov, values_u, names, is_log, hit) -> tuple[dict, list, list]:
        """Standard errors (physical units) and the unknowns flagged, by name."""
        se_u = np.sqrt(np.clip(np.diag(cov), 0, None))
        rel = np.where(is_log, se_u, se_u / np.maximum(np.abs(values_u), 1e-12))
        unident = [n for n, h, r in zip(names, hit, rel) if h or not r < 10]
        weak = [n for n, h, r in zip(names, hit, rel) if not h and 1 < r < 10]
        return se_u, unident, weak

    @on_cpu
    def gauss_newton(self, batch: IrregularBatch, *, max_iter: int = 50, ids=None,
                     multiple_shooting: bool = True) -> dict:  # fmt: skip
        """Fit parameters and every series' initial state (maximum likelihood).

        Parameters
        ----------
        batch : IrregularBatch
            Training series in physical units (observed channels, then covariates).
        max_iter : int
            Levenberg–Marquardt iterations per stage.
        ids : list, optional
            Series names used in the flagged-unknown names (default: row numbers).
        multiple_shooting : bool
            Run stage 1 (False: start single shooting from the current parameters and
            the first observations — a warm restart, e.g. when resuming).

        Returns
        -------
        dict
            ``iterations`` (both stages), ``cost`` (½ RSS), ``sigma`` (σ̂), ``x0`` [B, S]
            (estimated initial states), ``std_errors`` (per shared parameter; ``inf``
            when not identifiable), ``series_params`` / ``series_std_errors`` (per-series
            parameters, ``{name: [B]}``), ``stop_reason`` of the final stage
            (``"converged"``, ``"no_decrease"`` — no step lowers the cost: a minimum to
            the solver's accuracy — or ``"max_iter"``: not converged), ``rank`` and
            ``n_unknowns`` and ``condition`` of the column-scaled Jacobian,
            ``unidentifiable`` and ``weakly_identified`` (names, with relative standard
            error > 10 or in a null direction of the Jacobian, and between 1 and 10),
            ``warnings`` (sentences for the user).  With random effects also
            ``random_effects`` (``{name: {"population", "std_error", "omega",
            "omega_log"}}``: the population value with its standard error, and the
            between-series standard deviation ω in learnt coordinates, i.e. of
            ``log p`` for positive parameters), ``effective_parameters`` (the trace of
            the hat matrix) and ``random_rounds`` (variance-component updates).
        """
        n_obs = int(batch.mask[..., : self._dims(batch)[2]].sum())
        if self.random:
            est, sigma2, dof, rounds = self._fit_random(batch, max_iter, multiple_shooting)
        else:
            est = self._estimate(batch, fix_shared=False, max_iter=max_iter,
                                 multiple_shooting=multiple_shooting)  # fmt: skip
            dof = n_obs - len(est["u"])
            sigma2 = float(est["r"] @ est["r"]) / max(dof, 1)
        u, r, J, lay = est["u"], est["r"], est["J"], est["layout"]
        rss = float(r[: est["n_data"]] @ r[: est["n_data"]])
        cov, cond, rank, _, hit = self._covariance(J, sigma2)
        names = self._unknown_names(lay, est["states"], ids) + list(self.random)
        pos = self.field.pos_mask.numpy()
        is_log = self._log_mask(lay, free_mu=bool(self.random))
        se_u, unident, weak = self._identifiability(cov, u, names, is_log, hit)
        flagged = np.array([n in set(unident) for n in names])
        if flagged.any():  # no finite number for what the data do not determine
            cov = cov.copy()
            cov[flagged, :] = np.inf
            cov[:, flagged] = np.inf
            se_u = np.where(flagged, np.inf, se_u)
        P = self.field.raw.numel()
        raw_cov = torch.full((P, P), math.nan, dtype=torch.float64)
        sh = torch.as_tensor(lay.shared, dtype=torch.long)
        raw_cov[sh[:, None], sh[None, :]] = torch.as_tensor(cov[: lay.n_sh, : lay.n_sh])
        if self.random:  # the population values' block (their slots in field.raw)
            pop = torch.as_tensor([lay.per[self.per_series.index(k)] for k in self.random])
            raw_cov[pop[:, None], pop[None, :]] = torch.as_tensor(cov[lay.n :, lay.n :])
        self.raw_cov = raw_cov
        self.sigma = torch.tensor(math.sqrt(sigma2), dtype=torch.float64)
        self.series_raw = est["series_raw"]
        self.x0 = est["x0"]
        self._cov_u = cov
        S = len(est["states"])
        vals = self.field.transform(est["series_raw"]) if lay.per else None
        per_se = {}
        for i, j in enumerate(lay.per):
            idx = [lay.n_sh + b * len(lay.per) + i for b in range(lay.B)]
            se = se_u[idx] * (vals[:, i].numpy() if pos[j] else 1.0)
            per_se[self.field.names[j]] = se.tolist()
        warnings = []
        if unident:
            warnings.append(
                f"not identifiable from these data: {_names_summary(unident)} — their "
                "standard errors are infinite (a flat or near-flat direction of the "
                "likelihood); fix them (--fix / a pinned initial state) or add data."
            )
        if weak:
            warnings.append(
                f"weakly identified (relative standard error > 100 %): {_names_summary(weak)}."
            )
        if self._last_reason == "max_iter":
            warnings.append(
                "Levenberg–Marquardt stopped at the iteration cap (max_iter) before "
                "converging: raise --iters; the estimates may not be the optimum."
            )
        if dof < 1:
            warnings.append(
                f"{n_obs} observations for {len(u)} unknowns: σ̂ and the standard errors "
                "are not estimable."
            )
        self.info = {
            "iterations": est["iterations"],
            "cost": 0.5 * rss,
            "sigma": math.sqrt(sigma2) if dof >= 1 else math.nan,
            "x0": est["x0"].numpy().reshape(-1, S),
            "std_errors": self.std_errors(),
            "series_params": {n: vals[:, i].tolist() for i, n in enumerate(self.per_series)},
            "series_std_errors": per_se,
            "stop_reason": self._last_reason,
            "n_observations": n_obs,
            "n_unknowns": len(u),
            "rank": rank,
            "condition": cond,
            "unidentifiable": unident,
            "weakly_identified": weak,
            "warnings": warnings,
        }
        if self.random:
            se = self.std_errors()
            pop = self.field.values()
            self.info["random_effects"] = {
                k: {"population": pop[k], "std_error": se[k], "omega": float(self.omega[a]),
                    "omega_log": bool(pos[self.field.names.index(k)])}
                for a, k in enumerate(self.random)}  # fmt: skip
            self.info["effective_parameters"] = n_obs - dof
            self.info["random_rounds"] = rounds
        return self.info

    def _fit_random(self, batch, max_iter: int, multiple_shooting: bool):
        """Mixed-effects fit: penalised least squares alternating with the variance
        components.

        With the random parameters ``raw_{b,a} = μ_a + η_{b,a}``, ``η ~ N(0, ω_a²)``, the
        Laplace approximation of the marginal likelihood at fixed ``(σ, ω)`` is maximised
        over the unknowns by minimising ``Σ r² + Σ_{b,a} (σ/ω_a)² (raw_{b,a} − μ_a)²``
        (Levenberg–Marquardt on the residuals with prior rows appended).  Between
        rounds ``σ²`` and ``ω²`` get their EM updates from the posterior covariance
        ``C = σ² H⁻¹`` (``H = JᵀJ`` of the penalised problem):
        ``σ² = RSS / (N − tr(J_d H⁻¹ J_dᵀ))`` (the hat matrix's trace is the effective
        number of parameters) and ``ω_a² = mean_b E[(raw_{b,a} − μ_a)²]`` (the squared
        deviation plus its posterior variance), until both change by < 2 %.

        Returns the last estimate, ``σ̂²``, the residual degrees of freedom and the
        number of rounds.
        """
        D = self._dims(batch)[2]
        y = batch.values[..., :D][batch.mask[..., :D] > 0]
        n_obs = int(y.numel())
        nr = len(self.random)
        if math.isfinite(float(self.sigma)) and bool(torch.isfinite(self.omega).all()):
            sigma2, omega2 = float(self.sigma) ** 2, self.omega.numpy() ** 2  # resumed
        else:  # a start the EM updates correct within a few rounds
            sigma2 = max((0.05 * float(y.std())) ** 2, 1e-12)
            omega2 = np.full(nr, 0.3**2)
        start, total, rounds = None, 0, 0
        for rnd in range(1, self.random_rounds + 1):
            rounds = rnd
            pen = self._penalty(lam=np.sqrt(sigma2 / omega2))
            est = self._estimate(batch, fix_shared=False, max_iter=max_iter, penalty=pen,
                                 multiple_shooting=multiple_shooting, start=start)  # fmt: skip
            total += est["iterations"]
            start = {"series_raw": est["series_raw"].numpy(), "x0": est["x0"].numpy()}
            lay, r, J, nd = est["layout"], est["r"], est["J"], est["n_data"]
            Hinv = np.linalg.pinv(J.T @ J)
            df = float(np.sum((J[:nd] @ Hinv) * J[:nd]))
            C = sigma2 * Hinv
            u = est["u"]
            new_o2 = np.empty(nr)
            for a, i in enumerate(pen["idx"]):
                bc = np.array([lay.n_sh + b * len(lay.per) + i for b in range(lay.B)])
                m = lay.n + a
                eta = u[bc] - u[m]
                new_o2[a] = np.mean(eta**2 + C[bc, bc] + C[m, m] - 2 * C[bc, m])
            new_o2 = np.maximum(new_o2, 1e-12)
            new_s2 = max(float(r[:nd] @ r[:nd]) / max(n_obs - df, 1.0), 1e-300)
            change = max(abs(math.log(new_s2 / sigma2)) / 2,
                         *(np.abs(np.log(new_o2 / omega2)) / 2))  # fmt: skip
            sigma2, omega2 = new_s2, new_o2
            if change < 0.02:
                break
        # the reported estimate is the one at the final variance components
        pen = self._penalty(lam=np.sqrt(sigma2 / omega2))
        est = self._estimate(batch, fix_shared=False, max_iter=max_iter, penalty=pen,
                             start=start)  # fmt: skip
        est["iterations"] += total
        nd = est["n_data"]
        Hinv = np.linalg.pinv(est["J"].T @ est["J"])
        df = float(np.sum((est["J"][:nd] @ Hinv) * est["J"][:nd]))
        self.omega = torch.as_tensor(np.sqrt(omega2))
        self.sigma = torch.tensor(math.sqrt(sigma2), dtype=torch.float64)
        return est, sigma2, n_obs - df, rounds

    def std_errors(self) -> dict:
        """Gauss–Newton standard error of each shared parameter (physical units, delta
        method for log-parameters; ``inf`` when not identifiable, nan before a fit)."""
        se_raw = self.raw_cov.diagonal().clamp_min(0).sqrt()
        vals = self.field.transform(self.field.raw.detach())
        se = torch.where(self.field.pos_mask, se_raw * vals, se_raw)
        se = torch.where(torch.isinf(se_raw), torch.full_like(se, math.inf), se)
        return {k: float(se[i]) for i, k in enumerate(self.field.names)
                if k not in self.per_series or k in self.random}  # fmt: skip

    def values(self) -> dict:
        """Shared parameter values and the population values of random effects
        (per-series ones: ``info["series_params"]``)."""
        return {k: v for k, v in self.field.values().items()
                if k not in self.per_series or k in self.random}  # fmt: skip

    @on_cpu
    def initial_states(self, context: IrregularBatch, *, max_iter: int = 30) -> torch.Tensor:
        """[B, S] maximum-likelihood initial states of ``context``'s series, shared
        parameters fixed (per-series ones re-estimated)."""
        return self._estimate(context, fix_shared=True, max_iter=max_iter)["x0"]

    @on_cpu
    def loss(self, batch: IrregularBatch) -> torch.Tensor:
        """Mean squared residual of ``batch`` at re-estimated initial states (no gradient:
        train with ``fit(..., optimizer="gauss_newton")``)."""
        D = self._dims(batch)[2]
        with torch.no_grad():
            pred = self.predict(batch, batch.times)
        return masked_mse(pred, batch.values[..., :D], batch.mask[..., :D])

    def _query_solve(self, est, context, query_times, sens: bool):
        D, obs = est["D"], est["obs"]
        t0 = context.times[:, :1]
        starts = self._events(context, [(b, -math.inf, math.inf)
                                        for b in range(t0.shape[0])], est["states"])  # fmt: skip
        if starts is not None:  # a series with doses starts at its first dose
            t0 = torch.minimum(t0, torch.tensor([[s] for s, _ in starts], dtype=t0.dtype))
        B = t0.shape[0]
        qg = QueryGrid(query_times.to(t0.dtype), t0[:, 0])
        lay = est["layout"]
        raw0 = self.field.raw.detach().numpy()
        raw_rows, nodes = lay.unpack(est["u"], raw0, est["node_guess"])
        cov = None
        if self.field.covariates:
            cov = (context.times, _covariate_fill(context, D))
        events = self._events(context, [(b, -math.inf, float(qg.grid[b, -1]))
                                        for b in range(B)], est["states"])  # fmt: skip
        parts = [self._solve_rows(qg.grid[:B], nodes, raw_rows, cov, sens=sens, events=events)]
        if len(qg.series) > B:
            # backcasts, backward from t0; no dose precedes t0 (a series starts at its first)
            r = qg.series[B:]
            sub = None if cov is None else (cov[0][r], cov[1][r])
            parts.append(self._solve_rows(qg.grid[B:], nodes[r], raw_rows[r], sub, sens=sens))
        if not sens:
            return qg.take(torch.cat(parts)[:, :, obs])
        X = qg.take(torch.cat([p[0] for p in parts])[:, :, obs])
        Sn = qg.take(torch.cat([p[1] for p in parts])[:, :, obs])
        return X, Sn

    def _context_estimate(self, context: IrregularBatch) -> dict:
        """The context's initial states (and per-series parameters), shared parameters
        fixed; the last result is reused for the same context, parameters and settings
        the estimate depends on (doses, pinned states, per-series / random effects):
        scoring interpolation and extrapolation conditions on one context twice.  (The
        doses were not in the key: after ``model.doses`` changed, the states estimated
        under the old doses were reused.)"""
        tensors = [context.times, context.values, context.mask, self.field.raw]
        tensors += [torch.as_tensor(x) for x in (getattr(self, "sigma", None),
                    getattr(self, "omega", None)) if x is not None]  # fmt: skip
        settings = repr((self.doses, self.dose_state, sorted(self.fixed_x0.items()),
                         self.node_every, self.per_series, self.random))  # fmt: skip
        key = (tuple(hash(x.detach().numpy().tobytes()) for x in tensors), settings)
        cached = getattr(self, "_ctx_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        est = self._estimate(context, fix_shared=True, max_iter=30)
        self._ctx_cache = (key, est)
        return est

    @on_cpu
    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        """[B, Q, D]: integrate from each series' estimated initial state to ``query_times``
        (any order; a query before the series' start is integrated backward from it)."""
        est = self._context_estimate(context)
        return self._query_solve(est, context, query_times, sens=False)

    @on_cpu
    def band(self, context: IrregularBatch, query_times: torch.Tensor, *, level: float = 0.95,
             prediction: bool = True):  # fmt: skip
        """Delta-method band ``(lower, mean, upper)`` [B, Q, D] at ``query_times``.

        The variance of the prediction combines the uncertainty of the shared parameters
        (the training covariance, propagated through the context's re-estimated initial
        states and per-series parameters, which depend on them) and of the context's own
        unknowns (``σ̂² (J_wᵀJ_w)⁻¹`` from the context's observations); with
        ``prediction`` the observation noise ``σ̂²`` is added (a prediction interval for
        a new observation), otherwise it is a confidence band for the mean curve.
        Context series are assumed independent of the training series.  With random
        effects the context's parameters are estimated with their population prior
        (their uncertainty is the posterior one); the population values' own
        uncertainty is not propagated.
        """
        from scipy.stats import norm as _norm

        if not 0 < level < 1:
            raise InputError(f"`level` must be in (0, 1), got {level!r}.")
        if not math.isfinite(float(self.sigma)):
            raise InputError("band() needs a fitted model: call gauss_newton (or fit) first.")
        est = self._context_estimate(context)
        lay = est["layout"]
        shared = lay.shared
        X, Sn = self._query_solve(est, context, query_times, sens=True)
        # the context Jacobian w.r.t. its own unknowns (w) and the shared raw parameters (θ)
        full = _Layout(lay.segs, lay.B, lay.S, lay.P, shared, lay.per, self._pinned(est["states"]),
                       fix_shared=False)  # fmt: skip
        raw0 = self.field.raw.detach().numpy()
        u_full = np.concatenate([raw0[shared], est["u"]])

        def rj(v):
            return self._residuals(context, full, v, raw0, est["node_guess"], 1.0, est["obs"],
                                   est["D"], est["cov"])  # fmt: skip

        # with random effects the context's own parameters carry their prior rows too
        _, Jf = _penalised(rj, full, self._penalty(), False)(u_full)
        ns = len(shared)
        Jt, Jw = Jf[:, :ns], Jf[:, ns:]
        sigma2 = float(self.sigma) ** 2
        JwtJw_inv = np.linalg.pinv(Jw.T @ Jw)
        dw_dt = -JwtJw_inv @ (Jw.T @ Jt)  # [n_w, ns]
        cov_t = self.raw_cov.numpy()[np.ix_(shared, shared)]
        cov_w = sigma2 * JwtJw_inv
        B, Q, D = X.shape
        var = np.zeros((B, Q, D))
        Sn = Sn.numpy()
        for b in range(B):
            cols = full.cols[b]  # single shooting: segment b is series b
            Hw = np.zeros((Q, D, full.n))
            ok = cols >= 0
            Hw[:, :, cols[ok]] = Sn[b][..., ok]
            Ht, Hw = Hw[..., :ns], Hw[..., ns:]
            G = Ht + Hw @ dw_dt
            var[b] = (np.einsum("qdi,ij,qdj->qd", G, cov_t, G)
                      + np.einsum("qdi,ij,qdj->qd", Hw, cov_w, Hw))  # fmt: skip
        if prediction:
            var = var + sigma2
        z = float(_norm.ppf(0.5 + level / 2))
        half = torch.as_tensor(z * np.sqrt(np.clip(var, 0, None)))
        return X - half, X, X + half

    def vector_field(self, t, x: torch.Tensor) -> torch.Tensor:
        """The fitted ``dx/dt`` at physical states ``x [..., S]`` (shared parameters; not
        available for mechanisms with per-series parameters or covariates)."""
        return self.field(t, x)


def _covariate_fill(batch: IrregularBatch, D: int) -> torch.Tensor:
    """[B, T, C] covariates (channels ``D:``), each carried forward from its last value;
    before a series' first value of a covariate, that first value.  The backward fill is
    wanted here: a covariate is an input, never scored, and the fit (a smoother: initial
    states from every context observation) looks at the whole context anyway; it makes a
    per-series constant hold from the start, where 0 in physical units would be no mean."""
    return fill_locf(batch, backward=True)[..., D:]


def _names_summary(names: list) -> str:
    """``a, b[0], b[1], …`` shortened to ``b[…] (12 series)`` per base name."""
    groups: dict = {}
    for n in names:
        base = n.split("[", 1)[0]
        groups.setdefault(base, []).append(n)
    parts = []
    for base, ns in groups.items():
        parts.append(ns[0] if len(ns) == 1 else f"{base} ({len(ns)} series)")
    return ", ".join(parts)
