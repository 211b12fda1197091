"""Checkpoint faults that `studies/reliability/bad_inputs.py` found uncovered: a plain
(non-torch) pickle, a checkpoint another process is writing, one that appears between
the option check and the first save, temp files left by a killed save."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from odenet.cli import main
from odenet.fit import datasets, to_long
from odenet.fit.train import CheckpointError, checkpoint_lock, fit, save_checkpoint


@pytest.fixture(scope="module")
def lv_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "lv.csv"
    data = datasets.lotka_volterra(4, observed=0.5, n_times=16, t_end=8.0, noise=0.02, seed=0)
    to_long(data).to_csv(path, index=False)
    return path


def _one_line(capsys, argv) -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.startswith("odenet: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    return lines[0]


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_plain_pickle_checkpoint_is_refused_unexecuted_in_one_line(tmp_path, lv_csv, capsys):
    """torch's safe loader stops a protocol-4 pickle at its first opcode (not at the
    GLOBAL an odenet-format file would reach): still refused, still one line."""
    ck = tmp_path / "evil.pt"
    ck.write_bytes(pickle.dumps({"model": _Evil(tmp_path / "PWNED")}, protocol=4))
    line = _one_line(capsys, ["predict", ck, "--data", lv_csv, "--times", "1"])
    assert "refused" in line and "nothing in it was executed" in line
    assert not (tmp_path / "PWNED").exists()


def test_a_checkpoint_another_fit_is_writing_is_a_one_line_error(tmp_path, lv_csv, capsys):
    ck = tmp_path / "busy.pt"
    with checkpoint_lock(ck):  # what a running `odenet fit` holds (a second open file)
        line = _one_line(capsys, ["fit", lv_csv, "--iters", "2", "--hidden", "4",
                                  "--no-progress", "--checkpoint", ck])  # fmt: skip
    assert "being written by another running fit" in line and f"pid {os.getpid()}" in line
    assert not ck.exists()


def _tiny():
    from odenet.fit.baselines import GRUGrid

    data = datasets.lotka_volterra(3, observed=0.8, n_times=10, seed=0)
    torch.manual_seed(0)
    return GRUGrid(2, 4), data


def test_a_checkpoint_that_appears_after_the_option_check_is_not_overwritten(tmp_path):
    """`odenet fit` checks for an existing checkpoint before loading the data; another
    process may write one meanwhile.  The check is repeated under the lock."""
    model, data = _tiny()
    ck = tmp_path / "c.pt"
    save_checkpoint(ck, {"model": {}, "meta": {"kind": "someone else's"}})
    before = ck.read_bytes()
    with pytest.raises(CheckpointError, match="exists; pass --resume"):
        fit(model, data, iters=2, checkpoint=ck, overwrite=False)
    assert ck.read_bytes() == before
    fit(model, data, iters=2, checkpoint=ck)  # the API default overwrites, as before
    assert ck.read_bytes() != before


def test_temp_files_of_a_killed_save_are_removed_and_never_loaded(tmp_path):
    model, data = _tiny()
    ck = tmp_path / "c.pt"
    stale = tmp_path / ".c.pt.tmp-abc123"  # what a kill during torch.save leaves
    stale.write_bytes(b"half a zip")
    other = tmp_path / ".c.pt2.tmp-abc123"  # another checkpoint's: not ours to remove
    other.write_bytes(b"x")
    res = fit(model, data, iters=2, checkpoint=ck)
    assert not stale.exists() and other.exists()
    assert res.iterations == 2 and ck.exists()


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, capsys, monkeypatch):
    """A real ENOSPC comes from write()/fsync() without a file name; the one-line error
    must still say where (the injected fault of test_reliability_cli carries one)."""
    import errno

    from odenet.studies import sweep

    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > 2:  # study.json and one cell fit on the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(sweep.os, "fsync", fsync)
    out = tmp_path / "r"
    line = _one_line(capsys, ["converge", "--methods", "euler,rk4", "--steps", "8,16",
                              "--workers", "1", "--no-plot", "--quiet", "--out", out])  # fmt: skip
    assert os.strerror(errno.ENOSPC) in line and f"{out}/cells/" in line


def test_dask_and_tornado_tracebacks_of_a_lost_cluster_are_silenced():
    """Killing a real cluster mid-study printed four tornado/distributed tracebacks above
    the one-line error (studies/reliability/kill_random.py --dask); distributed resets
    its loggers' levels when imported, so the silencing must come after that import."""
    import logging

    pytest.importorskip("distributed")
    import distributed  # noqa: F401 - its import sets the levels this test restores

    from odenet.cli import _quiet_dask_logs

    names = (
        "distributed",
        "distributed.client",
        "distributed.utils",
        "distributed.core",
        "distributed.comm",
        "distributed.utils_comm",
        "tornado.application",
        "asyncio",
    )
    before = {n: logging.getLogger(n).level for n in names}
    try:
        _quiet_dask_logs()
        for name in ("distributed.client", "distributed.core", "tornado.application"):
            assert not logging.getLogger(name).isEnabledFor(logging.ERROR), name
    finally:
        for n, level in before.items():
            logging.getLogger(n).setLevel(level)


def test_resuming_on_other_training_data_is_refused_naming_the_options(tmp_path, lv_csv,
                                                                       capsys):  # fmt: skip
    """The split is drawn from --seed: a resume with another seed would continue the
    fit on other points, silently.  The checkpoint holds a fingerprint of its data."""
    ck = tmp_path / "c.pt"
    base = ["fit", lv_csv, "--iters", "2", "--hidden", "4", "--no-progress", "--checkpoint", ck]
    assert main([str(a) for a in base]) == 0
    capsys.readouterr()
    line = _one_line(capsys, [*base, "--resume", "--seed", "1"])
    assert "other training data" in line and "--seed" in line
    assert main([str(a) for a in [*base, "--resume"]]) == 0  # the same data resume
