"""After a trial whose Newton iteration failed, the loop lands on that trial's end
before stepping past it, where the field moves with time between here and there
(``odenet._loop._short_of_newton_failure``).

The rule on its own, host floats against [K] rows (hypothesis draws the inputs), and
what it must and must not do: an autonomous field is never landed on (only a forcing
can hide between stages), a forced one is, exactly, and nothing is evaluated when no
step would pass a failed end.  The solves it changes are in
``tests/test_stiff_holdout15.py`` (KPP's stratosphere, against scipy's Radau)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odenet._loop import _short_of_newton_failure
from odenet._ops import HostOps, TensorOps

D = torch.float64
RTOL, ATOL = 1e-4, 1e-7


def _backend(host: bool, forcing: float, calls: list):
    """A backend with ``ops``, ``snap`` and ``field``: ``f(t, y) = −y + forcing·t``."""

    def field(s, y):
        calls.append(s)
        t = torch.as_tensor(s, dtype=D).reshape(-1, 1)
        return -y + forcing * t

    return SimpleNamespace(ops=HostOps if host else TensorOps, snap=1e-12, field=field)


CFG = SimpleNamespace(atol=ATOL, rtol=RTOL, norm=None)


def _rule(host, s, y, h, s_fail, s_node, forcing):
    calls = []
    B = _backend(host, forcing, calls)
    if host:
        return (*_short_of_newton_failure(B, CFG, s, y[:1], h, s_fail, s_node), calls)
    t = lambda v: torch.tensor([v], dtype=D)  # noqa: E731
    h2, kept = _short_of_newton_failure(B, CFG, t(s), y[:1], t(h), t(s_fail), t(s_node))
    return float(h2[0]), float(kept[0]), calls


def _tolerance_units(y):
    """``rms(v / (atol + rtol·|y|))`` of a vector ``v`` of ones."""
    return math.sqrt(((ATOL + RTOL * y.abs()) ** -2).mean())


@settings(max_examples=300, deadline=None)
@given(
    s=st.floats(0.0, 100.0),
    h=st.floats(1e-6, 50.0),
    ahead=st.floats(-10.0, 60.0),
    node=st.floats(1e-6, 200.0),
    units=st.sampled_from([0.0, 0.3, 0.9, 1.1, 3.0, 30.0]),
)
def test_host_and_rows_agree_and_a_step_is_only_ever_shortened_onto_the_failed_end(
    s, h, ahead, node, units
):
    # the field moves between here and there by forcing·ahead per component; over the
    # step, ``units`` tolerance units of this state (forcing chosen so)
    y = torch.tensor([[1.0, -2.0]], dtype=D)
    # (a subnormal ``ahead`` makes h·|ahead| zero: no forcing; such an end is within the
    # snap and never passed)
    forcing = units / (h * abs(ahead) * _tolerance_units(y)) if h * abs(ahead) > 0 else 0.0
    s_fail, s_node = s + ahead, s + node
    h_host, kept_host, calls = _rule(True, s, y, h, s_fail, s_node, forcing)
    h_rows, kept_rows, _ = _rule(False, s, y, h, s_fail, s_node, forcing)
    assert (h_host, kept_host) == (h_rows, kept_rows)
    passes = s_fail - s > 1e-12 and s_fail < s_node - 1e-12 and h > s_fail - s
    assert bool(calls) == passes  # f is asked only when a step would pass a failed end
    if not passes:
        assert (h_host, kept_host) == (h, s_fail)
    elif units > 1.0:
        assert h_host == s_fail - s and kept_host == s_fail  # lands on it, keeps it
    else:
        assert h_host == h and kept_host == -math.inf  # steps over it, forgets it


def test_an_autonomous_field_is_never_landed_on_a_forced_one_is():
    y = torch.tensor([[1e3, 1.0]], dtype=D)
    for host in (True, False):
        h, kept, calls = _rule(host, 2.0, y, 5.0, 3.0, 100.0, forcing=0.0)
        assert (h, kept, len(calls)) == (5.0, -math.inf, 2)
        h, kept, _ = _rule(host, 2.0, y, 5.0, 3.0, 100.0, forcing=1.0)
        assert (h, kept) == (1.0, 3.0)


def test_rows_decide_each_for_their_own_failed_end():
    calls = []
    B = _backend(False, 1.0, calls)
    s = torch.tensor([0.0, 0.0, 0.0], dtype=D)
    y = torch.ones(3, 2, dtype=D)
    h = torch.tensor([4.0, 4.0, 1.0], dtype=D)
    s_fail = torch.tensor([2.0, -math.inf, 2.0], dtype=D)  # row 1 has none; row 2 stops short
    h2, kept = _short_of_newton_failure(B, CFG, s, y, h, s_fail, torch.full_like(s, 10.0))
    assert h2.tolist() == [2.0, 4.0, 1.0]
    assert kept.tolist() == [2.0, -math.inf, 2.0]
