"""Hypothesis fuzzing of CSV input: any file either loads into a valid panel or is
refused with an OdenetError that names the problem — never a raw traceback."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odenet import OdenetError
from odenet.fit.data import load_long

cell = st.one_of(
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "abc", "1e400", " 2 ", "1,5", '"x"']),
)


@st.composite
def csv_text(draw):
    cols = draw(
        st.lists(st.sampled_from(["id", "time", "x", "y", "z", "time"]), min_size=0, max_size=5)
    )
    rows = draw(st.lists(st.lists(cell, min_size=len(cols), max_size=len(cols) + 1), max_size=12))
    lines = [",".join(cols)] + [",".join(r) for r in rows]
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n"]))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=csv_text())
def test_any_csv_loads_or_is_refused_with_an_odenet_error(tmp_path, text):
    path = tmp_path / "data.csv"
    path.write_text(text)
    try:
        data = load_long(path)
    except OdenetError as e:
        assert str(e)  # a message that says what was wrong
        return
    # what loads is a usable panel: finite times, at least one series
    for series in getattr(data, "times", []):
        assert all(math.isfinite(float(t)) for t in series)
