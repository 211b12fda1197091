"""Gradients of a solve: ``direct`` | ``adjoint`` | ``checkpoint``.

``odenet.solve(..., sensitivity=...)`` chooses how ``∂L/∂(y0, θ, t)`` is computed:

``"direct"``
    Autograd through every step (in :mod:`odenet._solve`): the exact gradient of
    the computed solution; memory grows with the number of steps.
``"adjoint"``
    The continuous adjoint (:mod:`odenet.sensitivity._adjoint`), integrated backward
    against the forward's own states — at the step ends, and interpolated inside —
    never a backward re-solve of the state, so it stays accurate on contracting
    dynamics, where the textbook backsolve explodes.  The forward keeps up to
    ``checkpoints`` states (default: as many as fit in 4.5 MiB): all of them for shorter solves (no
    recomputation), else every ``k``-th, and each segment is recomputed once without
    graph into the slots the spent checkpoints free.  Memory about constant in ``N``
    up to ``≈ checkpoints²/4`` steps (``O(√N)`` beyond); no autograd graph is kept
    across steps.
``"checkpoint"``
    The exact discrete gradient (as ``"direct"``, to round-off) with ``O(√N)``
    memory: store every ``k``-th state, recompute each segment with autograd during
    the backward pass, replaying the forward's accepted step sizes.

Both non-direct modes differentiate with respect to ``y0``, the output times ``t``
and the parameters of the field: ``adjoint_params`` if given, else the parameters of
``f`` when it is an ``nn.Module`` (or a bound method of one) plus every other tensor
requiring grad that ``f``'s output depends on (what a closure such as
``lambda t, y: net(y)`` captures).  Backward statistics
appear in ``solution.stats`` after ``.backward()``: ``backward_nfe`` (field
evaluations in the backward pass, replays included), ``backward_vjp``,
``backward_steps`` / ``backward_rejected`` (adjoint steps), ``backward_segments``,
``checkpoints``.

See ``docs/sensitivity.md`` for the math and the costs.
"""

from __future__ import annotations

import torch

from odenet._errors import InputError, NonFiniteError, SolverError, UnsupportedDerivativeError
from odenet._loop import integrate
from odenet._validate import check_callable, check_flag, check_tolerances
from odenet.sensitivity._adjoint import Counter, adjoint_backward
from odenet.sensitivity._params import complete_params, find_params, hidden_leaves
from odenet.sensitivity._tape import OutputMap, Tape, check_budget, check_stride, replay
from odenet.tableaus import tableau

__all__ = ["KINDS", "solve_with"]

KINDS = ("adjoint", "checkpoint")
_COMMON = ("adjoint_params", "checkpoint_every", "checkpoints")
# the adjoint keeps as many forward states as fit in this many bytes (at least 8; all
# of them for shorter solves, and never fewer than the √N scheme would): memory about
# constant up to ≈ C²/4 steps.  4.5 MiB holds 144 states of a 32 kB state (batch 32
# × 256 float32), enough for 5 000 steps in two levels
ADJOINT_CHECKPOINT_BYTES = 9 * 2**19
ADJOINT_MIN_CHECKPOINTS = 8
_ADJOINT = (
    "adjoint_rtol",
    "adjoint_atol",
    "adjoint_method",
    "adjoint_options",
    "adjoint_seminorm",
    "adjoint_norm",
    "adjoint_callback",
    "adjoint_split_nodes",
    # the backward pass's own steps (torchdiffeq's adjoint_options)
    "adjoint_step_size",
    "adjoint_first_step",
    "adjoint_max_step",
    "adjoint_min_step",
    "adjoint_max_steps",
    "adjoint_controller",
)
_ADJOINT_OPTIONS_KEYS = ("norm",)


def _check_options(kind: str, options: dict) -> dict:
    allowed = _COMMON + (_ADJOINT if kind == "adjoint" else ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for sensitivity={kind!r}; "
            f"it takes {', '.join(allowed)}."
        )
    opts = dict(options)
    adj_opts = opts.pop("adjoint_options", None) or {}
    if not isinstance(adj_opts, dict):
        raise InputError(
            f"`adjoint_options` must be a dict, got {type(adj_opts).__name__}; "
            "prefer the flat option `adjoint_seminorm=True|False`."
        )
    bad = sorted(set(adj_opts) - set(_ADJOINT_OPTIONS_KEYS))
    if bad:
        raise InputError(
            f"unknown `adjoint_options` key(s) {bad}; only 'norm' ('seminorm', 'default' "
            "or a callable) is understood — use the flat adjoint_* options for the rest."
        )
    if "norm" in adj_opts and callable(adj_opts["norm"]):
        # torchdiffeq's custom adjoint norm: called on (t, y, a, *parameter channels)
        if "adjoint_norm" in opts:
            raise InputError("give one of `adjoint_norm` and `adjoint_options['norm']`.")
        opts["adjoint_norm"] = _TorchdiffeqNorm(adj_opts["norm"])
    elif "norm" in adj_opts:
        norm = adj_opts["norm"]
        if norm not in ("seminorm", "default"):
            raise InputError(
                f"`adjoint_options['norm']` must be 'seminorm' or 'default', got {norm!r}."
            )
        if "adjoint_seminorm" in opts and opts["adjoint_seminorm"] != (norm == "seminorm"):
            raise InputError("`adjoint_seminorm` and `adjoint_options['norm']` disagree; give one.")
        opts["adjoint_seminorm"] = norm == "seminorm"
    return opts


def _leaves(state):
    """A method's kept state as autograd leaves (floating parts only), or None."""
    if state is None:
        return None
    return tuple(x.detach().requires_grad_(True) if x.is_floating_point() else x for x in state)


class _TorchdiffeqNorm:
    """A user norm in torchdiffeq's form, ``norm((t, y, a, *parameter channels))``."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, parts):
        a, *params = parts
        zero = a.new_zeros(())
        # odenet's adjoint does not integrate t or y backward: their error is zero
        return self.fn((zero, torch.zeros_like(a), a, *params))


def _adjoint_norm(norm, prep, params):
    """The loop's row norm ``[1, n + P] -> [1]`` for a user ``norm((a, *params))`` on
    the adjoint's error ratio, ``a`` in ``y0``'s layout and each parameter channel in
    its parameter's shape."""
    shape = prep.y0.shape
    n = prep.y0.numel()

    def row_norm(q):
        parts, i = [q[0, :n].reshape(shape)], n
        for p in params:
            parts.append(q[0, i : i + p.numel()].reshape(p.shape))
            i += p.numel()
        value = norm(tuple(parts))
        return torch.as_tensor(value, dtype=q.dtype, device=q.device).reshape(1)

    return row_norm


def _adjoint_callback(callback, prep):
    """``callback(kind, t, a, dt)`` in user time for the adjoint's steps (``kind``
    ``"step"`` before each trial, then ``"accept"`` or ``"reject"``; ``a = ∂L/∂y(t)``
    in ``y0``'s layout, ``dt < 0`` when the forward ran forward in time); as the loop's
    ``callback(kind, σ, a, h, accept)`` in the adjoint's time ``σ = −s``."""
    if callback is None:
        return None
    check_callable("adjoint_callback", callback, "callback(kind, t, a, dt)")
    d, shape, per, n = prep.direction, prep.y0.shape, prep.per_sample, prep.y0.numel()

    def loop_callback(kind, sigma, a, h, accept):
        t, dt = -sigma * d, -h * d
        if not per:
            t, dt = t[0], dt[0]
            a = a[:, :n]  # without the parameter channels of an augmented state
        aa = a.reshape((a.shape[0], *shape[1:]) if per else shape)
        if kind == "step":
            callback("step", t, aa, dt)
        else:
            callback("accept" if bool(accept.all()) else "reject", t, aa, dt)

    return loop_callback


class _Run:
    """Everything the forward keeps for the backward pass of one solve."""

    def __init__(self, kind, prep, tab, opts):
        self.kind = kind
        self.prep = prep
        self.tab = tab
        self.rk = prep.cfg.rk
        self.params = find_params(prep.f, opts.get("adjoint_params"))
        self.every = check_stride(opts.get("checkpoint_every"))
        self.budget = check_budget(opts.get("checkpoints"))
        if self.every is not None and self.budget is not None:
            raise InputError(
                "give one of `checkpoint_every` (a fixed stride) and `checkpoints` (the "
                f"most states kept), not both; got {self.every} and {self.budget}."
            )
        self.counter = Counter()
        self.stats: dict | None = None
        self.segments_replayed = 0
        if kind == "adjoint":
            rtol = opts.get("adjoint_rtol", prep.cfg.rtol)
            atol = opts.get("adjoint_atol", prep.cfg.atol)
            if not isinstance(rtol, torch.Tensor) or not isinstance(atol, torch.Tensor):
                rtol, atol = check_tolerances(rtol, atol)
            self.adjoint_rtol, self.adjoint_atol = rtol, atol
            # a method with memory names the Runge–Kutta method of its adjoint
            method = opts.get("adjoint_method") or getattr(tab, "adjoint_method", None)
            if method is None and not prep.cfg.fixed and getattr(tab, "estimator", None):
                # Radau IIA estimates its error by its own rule, which the backward loop
                # cannot run: as its own adjoint it would take one uncontrolled step per
                # forward step (33 % error in dy/dλ on y' = λ(y − cos t), λ = −1e4, rtol
                # 1e-6).  kvaerno5 is L-stable with an embedded pair: controlled steps.
                method = "kvaerno5"
            self.adjoint_tableau = tab if method is None else tableau(method)
            # adjoint_step_size, adjoint_first_step, ...
            from odenet.sensitivity._adjoint import adjoint_step_options

            self.adjoint_steps = adjoint_step_options(opts, self.adjoint_tableau)
            self.seminorm = bool(opts.get("adjoint_seminorm", True))
            norm = opts.get("adjoint_norm")
            if norm is not None:
                check_callable("adjoint_norm", norm, "norm(parts)")
                if opts.get("adjoint_seminorm"):
                    raise InputError(
                        "`adjoint_norm` measures the parameter channels too; it cannot be "
                        "combined with `adjoint_seminorm=True`."
                    )
                self.seminorm = False  # the parameter channels join the adjoint's state
            self.adjoint_norm = None if norm is None else _adjoint_norm(norm, prep, self.params)
            self.adjoint_callback = _adjoint_callback(opts.get("adjoint_callback"), prep)
            # at a `jump_t` the forward lands one ulp before and restarts one after:
            # a node linearized once would lend the pre-jump step the post-jump field
            # (dopri5, y' = -ky → -2ky + c at t = 1: dL/dc 1.1 % off at rtol 1e-4)
            self.split_nodes = check_flag(
                "adjoint_split_nodes", opts.get("adjoint_split_nodes", prep.cfg.jumps)
            )
            if not self.seminorm and prep.per_sample:
                raise InputError(
                    "`adjoint_seminorm=False` or an `adjoint_norm` (parameter channels in "
                    "the adjoint's error norm) needs a shared time grid; with per-sample "
                    "times `t [B, T]` leave the seminorm on."
                )
        g_plain = prep.internal_field(prep.f, count=False)
        counter = self.counter

        def g_count(s, y):
            counter.nfe += 1
            return g_plain(s, y)

        self.g_count = g_count
        self.g_lin = g_plain  # Linearization counts its own evaluations

    # --- forward ---------------------------------------------------------------------
    def forward(self, y0_rows, s_out, slopes: bool = False):
        prep = self.prep
        prep.cfg.slopes = slopes  # the outputs' time derivatives, for _time_grads
        self.s_out = s_out.detach()
        self.y0_rows = y0_rows.detach()
        g = prep.internal_field(prep.f, check=True)
        budget = self.budget
        if budget is None and self.every is None and self.kind == "adjoint":
            state_bytes = max(1, self.y0_rows.numel() * self.y0_rows.element_size())
            budget = max(ADJOINT_MIN_CHECKPOINTS, ADJOINT_CHECKPOINT_BYTES // state_bytes)
        self.tape = Tape(self.s_out[:, 0], self.y0_rows, self.every, budget=budget)
        self.result = integrate(g, self.s_out, self.y0_rows, prep.cfg, record=self.tape)
        if self.kind == "adjoint":
            self.tape.finish()
        self.result.steps_record = []
        return self.result.ys

    # --- backward --------------------------------------------------------------------
    def backward(self, grad_ys, ys, need_s: bool):
        if not bool((self.result.status == 0).all()):
            raise SolverError(
                f"sensitivity={self.kind!r}: the forward solve failed (status "
                f"{self.result.status.tolist()}), so it has no gradient; fix the solve "
                "first (see `solution.message`)."
            )
        self._check_no_late_params()
        if grad_ys is None:
            grad_ys = torch.zeros_like(ys)
        else:  # an output never reached (NaN) has no cotangent; a NaN from the loss stays
            grad_ys = torch.where(torch.isnan(ys), torch.zeros_like(grad_ys), grad_ys)
            if self.kind == "adjoint" and not bool(torch.isfinite(grad_ys).all()):
                # (checkpoint's gradients carry it as NaN, as direct's do; the adjoint
                # solve would fail on it and blame its step size)
                bad = (~torch.isfinite(grad_ys)).nonzero()[0].tolist()
                raise NonFiniteError(
                    f"sensitivity='adjoint': the loss's gradient with respect to the "
                    f"outputs is NaN/inf (row {bad[0]}, output {bad[1]}), so the adjoint "
                    "has no finite start; check the loss (e.g. a NaN weight or log(0))."
                )
        self.omap = OutputMap(self.tape, self.s_out)
        if self.kind == "adjoint":
            a0, gth = adjoint_backward(self, grad_ys)
        else:
            a0, gth = self._checkpoint_backward(grad_ys)
        grad_s = self._time_grads(grad_ys, a0) if need_s else None
        grad_y0 = a0 + grad_ys[:, 0]
        gth = [torch.zeros_like(p) if d is None else d for p, d in zip(self.params, gth)]
        self._record_stats()
        return grad_y0, grad_s, gth

    def _check_no_late_params(self):
        """Raise if ``f`` uses, at a kept state after ``t0``, a tensor requiring grad that
        is not a parameter of the backward pass: found from one evaluation at ``t0``,
        the parameters miss what a field uses only later (``b`` of ``a if t < 0.6 else
        b``), and its gradient would silently be missing.  Evaluations of ``f`` at the
        end and at up to 15 kept states spread over the solve (a backward costs several
        per step); a tensor used only between them is not seen."""
        tape = self.tape
        kept = sorted(set(tape.ckpt) - {0, tape.n_steps})
        spread = torch.linspace(0, len(kept) - 1, 15).tolist() if kept else []
        probes = [kept[round(j)] for j in spread]
        for i in sorted({*probes, tape.n_steps} - {0}):
            y = tape.ckpt[i] if i != tape.n_steps else tape.last
            late = hidden_leaves(self.g_lin, tape.s[i], y, self.params)
            if late:
                shapes = ", ".join(str(tuple(v.shape)) for v in late[:5])
                raise InputError(
                    f"sensitivity={self.kind!r}: the vector field uses {len(late)} tensor(s) "
                    f"requiring grad (shapes {shapes}) that it did not use at t0, where "
                    "its parameters were found, and that are not in `adjoint_params`; "
                    "their gradients would be missing. Pass every such tensor in "
                    "`adjoint_params=[...]` (or use sensitivity='direct')."
                )

    def _checkpoint_backward(self, grad_ys):
        tape, omap, rk = self.tape, self.omap, self.rk
        K = grad_ys.shape[0]
        rows = torch.arange(K, device=grad_ys.device)
        a = torch.zeros_like(self.y0_rows)
        # a method with memory: the cotangent of its history at the segment's end too
        # (the history carries earlier states into later steps)
        a_state: list | None = None
        gth = [None] * len(self.params)
        track = rk.track_grad
        rk.track_grad = True
        P = len(self.params)
        try:
            for i0, i1 in tape.segments():
                if rk.newton is not None:
                    rk.newton.forget()
                with torch.enable_grad():
                    yc = tape.ckpt[i0].detach().requires_grad_(True)
                    state0 = _leaves(tape.mstate.get(i0))
                    y_end, outs, _, state_end = replay(
                        self.g_count, rk, tape, omap, i0, i1, yc, dense=False, state=state0
                    )
                    total = (y_end * a).sum()
                    if a_state is not None:
                        for x, ax in zip(state_end, a_state):
                            if ax is not None and x.requires_grad:
                                total = total + (x * ax).sum()
                    for mask, idx, value in outs:
                        G = torch.where(mask[:, None], grad_ys[rows, idx], 0.0)
                        total = total + (value * G).sum()
                    wrt = [yc, *self.params]
                    floats = [x for x in state0 or () if x.requires_grad]
                    if total.requires_grad:
                        # retain: see Linearization.release (a captured non-leaf
                        # tensor's graph is shared by every segment)
                        grads = torch.autograd.grad(
                            total, wrt + floats, retain_graph=True, allow_unused=True
                        )
                    else:
                        grads = [None] * (len(wrt) + len(floats))
                    # the retained graph goes with its last references, before the
                    # next segment's is built (peak memory: one segment's graph)
                    total = y_end = outs = state_end = value = G = None
                self.segments_replayed += 1
                a = grads[0] if grads[0] is not None else torch.zeros_like(a)
                if state0 is not None:
                    it = iter(grads[1 + P :])
                    a_state = [next(it) if x.requires_grad else None for x in state0]
                gth = [
                    d if acc is None else (acc if d is None else acc + d)
                    for acc, d in zip(gth, grads[1 : 1 + P])
                ]
        finally:
            rk.track_grad = track
        return a, gth

    def _time_grads(self, grad_ys, a0):
        """``∂L/∂s_i = ⟨∂L/∂y_i, y'(s_i)⟩`` (i ≥ 1; the dense output's slope, which the
        forward recorded), ``∂L/∂s_0 = −⟨a(s_0), g(s_0, y_0)⟩``."""
        s_out = self.s_out
        slopes = self.result.slopes
        out = torch.zeros_like(s_out)
        with torch.no_grad():
            out[:, 0] = -(a0 * slopes[:, 0]).sum(dim=1).to(out.dtype)
            G = grad_ys[:, 1:]  # (an output never reached has a NaN slope and no cotangent)
            out[:, 1:] = torch.where(G != 0, G * slopes[:, 1:], 0.0).sum(dim=2).to(out.dtype)
        return out

    def _record_stats(self):
        if self.stats is None:
            return
        st = self.stats
        st["backward_nfe"] = self.counter.nfe
        st["backward_vjp"] = self.counter.vjp
        st["backward_segments"] = self.segments_replayed
        st["checkpoints"] = len(self.tape.ckpt)
        if self.kind == "adjoint":
            acc, rej = self.backward_accepted, self.backward_rejected
            if self.prep.per_sample:
                st["backward_steps"], st["backward_rejected"] = acc, rej
            else:
                st["backward_steps"], st["backward_rejected"] = int(acc[0]), int(rej[0])
            st["seminorm"] = self.seminorm


class _NoSecondDerivative(torch.autograd.Function):
    """Identity on a gradient the adjoint/checkpoint backward returned under
    ``create_graph=True``, tied to the solve's inputs (``anchors``): differentiating
    it again raises :class:`UnsupportedDerivativeError` (the backward is not itself
    differentiable; torch's ``once_differentiable`` raised a bare RuntimeError, or with
    ``allow_unused=True`` returned ``None``, a silent zero)."""

    @staticmethod
    def forward(ctx, kind, grad, *anchors):
        ctx.kind = kind
        return grad.clone()

    @staticmethod
    def backward(ctx, *_):
        raise UnsupportedDerivativeError(
            f"second derivatives through sensitivity={ctx.kind!r} are not supported (its "
            "backward pass is not differentiable).  Use sensitivity='direct' for "
            "Hessian-vector products, gradient penalties or derivatives of dy/dt."
        )


class _SensitivityFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: _Run, y0_rows, s_out, *params):
        ys = run.forward(y0_rows, s_out, slopes=ctx.needs_input_grad[2])
        ctx.run = run
        ctx.save_for_backward(ys)
        # (only to tie a create_graph gradient to the graph; not saved tensors, so an
        # in-place update of a parameter between forward and backward stays allowed)
        ctx.inputs = (y0_rows, s_out, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        create_graph = torch.is_grad_enabled()
        (ys,) = ctx.saved_tensors
        run = ctx.run
        with torch.no_grad():
            grad_y0, grad_s, gth = run.backward(grad_ys.detach(), ys, ctx.needs_input_grad[2])
        grads = (grad_y0, grad_s, *gth)
        if create_graph:
            anchors = [x for x in (grad_ys, *ctx.inputs) if x.requires_grad]
            grads = tuple(
                None if g is None else _NoSecondDerivative.apply(run.kind, g, *anchors)
                for g in grads
            )
        return (None, *grads)


def solve_with(kind: str, prep, tab, *, throw: bool, **options):
    """Run a prepared problem with ``sensitivity=kind`` (``"adjoint"`` or ``"checkpoint"``).

    Parameters
    ----------
    kind : ``"adjoint" | "checkpoint"``
    prep : :class:`odenet._solve.Prepared`; tab : the forward's ButcherTableau.
    throw : raise on solver failure (else report it in ``Solution.status``).
    **options
        ``adjoint_params`` (iterable of tensors; default the parameters of ``f`` when
        it is an ``nn.Module`` and any other tensor requiring grad that ``f``'s output
        depends on), ``checkpoint_every`` (steps per stored state) or
        ``checkpoints`` (the most forward states kept, ``≥ 2``; default as many as fit
        in 4.5 MiB, at least 8, for ``"adjoint"``, ``≈ √N`` for ``"checkpoint"``; the ``√N``
        rule takes over beyond ``N ≈ checkpoints²/4``); for ``"adjoint"`` also
        ``adjoint_rtol``,
        ``adjoint_atol`` (default: the forward's), ``adjoint_method`` (default: the
        forward's), ``adjoint_seminorm`` (default True), ``adjoint_norm`` (a callable
        ``norm((a, *params)) -> scalar`` on the error ratio of the adjoint, in ``y0``'s
        layout, and of each parameter channel, in its parameter's shape; shared grids
        only), ``adjoint_callback`` (``callback(kind, t, a, dt)``: ``"step"`` before each
        backward trial step, then ``"accept"``/``"reject"``; ``t`` in user time from the
        last output back to the first) and torchdiffeq's
        ``adjoint_options={"norm": "seminorm" | "default" | callable}`` (a callable gets
        ``(t, y, a, *params)``, with zero entries for ``t`` and ``y``);
        ``adjoint_split_nodes=True`` linearizes ``f`` separately at the end of one forward
        step and at the start of the next (for a field discontinuous at the step ends,
        such as torchdiffeq's ``perturb``; one more evaluation per step; the default
        when ``jump_t`` is given).
        The backward steps (each within one forward step): for an adjoint method with an
        error estimate ``adjoint_first_step`` (its first step), ``adjoint_max_step``,
        ``adjoint_min_step`` (steps of that size are accepted, torchdiffeq's meaning),
        ``adjoint_max_steps`` (per forward step), ``adjoint_controller`` (default the
        forward's); for one without, ``adjoint_step_size`` (each forward step in
        ``⌈H / adjoint_step_size⌉`` equal steps; default one).

    Returns
    -------
    Solution
        As :func:`odenet.solve`; ``stats`` gains the backward statistics after
        ``.backward()``.
    """
    if kind not in KINDS:
        raise InputError(f"`sensitivity` kind must be one of {KINDS}, got {kind!r}.")
    opts = _check_options(kind, options)
    run = _Run(kind, prep, tab, opts)
    if torch.is_grad_enabled():  # a closure's captured tensors join the parameters
        g_check = prep.internal_field(prep.f, count=False, check=True)
        given = opts.get("adjoint_params") is not None
        run.params = complete_params(
            g_check, prep.s_out[:, 0], prep.y0_rows, run.params, kind, given=given
        )
    needs_grad = torch.is_grad_enabled() and (
        prep.y0_rows.requires_grad or prep.s_out.requires_grad or bool(run.params)
    )
    if needs_grad:
        ys = _SensitivityFunction.apply(run, prep.y0_rows, prep.s_out, *run.params)
    else:
        ys = run.forward(prep.y0_rows, prep.s_out)
    result = run.result
    result.ys = ys
    sol = prep.solution(result, tab.name, throw=throw, frozen_steps=kind != "adjoint")
    run.stats = sol.stats
    sol.stats["checkpoints"] = len(run.tape.ckpt)
    return sol
