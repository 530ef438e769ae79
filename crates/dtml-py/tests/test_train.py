"""dtml.train against `dtml train`, live: the same settings give the same
losses; the callback sees every event; an exception in the callback or
Ctrl-C stops the run with a checkpoint that resume=True continues from;
bad settings raise before any work."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import dtml
from test_models import cli

TINY = dict(iterations=4, patch=(32, 32, 16), width=2, checkpoint_every=0)
TINY_FLAGS = ["--iterations", "4", "--patch", "32,32,16", "--width", "2", "--checkpoint-every", "0"]


def losses(run):
    with open(run / "log.jsonl") as f:
        return [json.loads(line)["loss"] for line in f]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    work = tmp_path_factory.mktemp("train")
    cli("generate", "--out", work / "data", "--shape", "40,36,24", "--train-cases", "4", "--test-cases", "1")
    cli("prepare", "--data", work / "data", "--out", work / "prepared", "--labelled", "2")
    cli("train", "--data", work / "prepared", "--out", work / "cli-run", *TINY_FLAGS)
    return work


def test_python_trains_what_the_cli_trains(prepared, tmp_path):
    events = []
    out = dtml.train(prepared / "prepared", tmp_path / "run", callback=events.append, **TINY)
    assert losses(tmp_path / "run") == losses(prepared / "cli-run")
    assert [e["event"] for e in events] == ["started"] + ["iteration"] * 4 + ["checkpoint"]
    assert events[0] == {"event": "started", "first": 0, "iterations": 4}
    assert [e["iteration"] for e in events[1:5]] == [1, 2, 3, 4]
    assert events[4]["loss"] == out["loss"] == losses(prepared / "cli-run")[-1]
    assert set(events[4]["parts"]) and events[4]["lr"] > 0
    assert out["iterations"] == 4 and out["run"] == tmp_path / "run"
    assert all(os.path.isfile(p) for p in out["students"]) and len(out["students"]) == 2
    scan = next((prepared / "data" / "imagesTs").iterdir())
    ours = dtml.Model(tmp_path / "run").predict(dtml.read_volume(scan))
    theirs = dtml.Model(prepared / "cli-run").predict(dtml.read_volume(scan))
    np.testing.assert_array_equal(ours["probability"], theirs["probability"])


def test_an_exception_in_the_callback_stops_and_resume_goes_on(prepared, tmp_path):
    run = tmp_path / "run"

    def enough(event):
        if event["event"] == "iteration" and event["iteration"] == 2:
            raise RuntimeError("enough for now")

    with pytest.raises(RuntimeError, match="enough for now"):
        dtml.train(prepared / "prepared", run, callback=enough, **TINY)
    assert len(losses(run)) == 2
    events = []
    dtml.train(prepared / "prepared", run, resume=True, callback=events.append)
    assert events[0] == {"event": "started", "first": 2, "iterations": 4}
    assert losses(run) == losses(prepared / "cli-run")


def test_ctrl_c_stops_within_an_iteration_and_keeps_a_checkpoint(prepared, tmp_path):
    run = tmp_path / "run"
    script = (
        "import dtml, sys; "
        f"dtml.train(sys.argv[1], sys.argv[2], iterations=60, patch=(32, 32, 16), width=2, checkpoint_every=0)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(prepared / "prepared"), str(run)],
        stderr=subprocess.PIPE,
        text=True,
    )
    log = run / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 2):
        assert child.poll() is None, child.stderr.read()
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode != 0 and "KeyboardInterrupt" in stderr, stderr
    done = len(losses(run))
    assert 2 <= done < 60, done
    events = []
    dtml.train(prepared / "prepared", run, resume=True, callback=events.append)
    assert events[0]["first"] == done
    assert len(losses(run)) == 60


@pytest.mark.parametrize(
    "settings, error, needle",
    [
        (dict(iterationz=4), TypeError, "iterationz"),
        (dict(method="nope"), ValueError, "nope"),
        (dict(patch=(30, 32, 16)), ValueError, "patch"),
        (dict(width="wide"), ValueError, "width"),
    ],
)
def test_bad_settings_raise_before_any_work(prepared, tmp_path, settings, error, needle):
    with pytest.raises(error, match=needle):
        dtml.train(prepared / "prepared", tmp_path / "run", **settings)
    assert not (tmp_path / "run").exists()


def test_missing_data_and_foreign_folders_are_refused(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-cache"):
        dtml.train(tmp_path / "no-such-cache", tmp_path / "run", **TINY)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="mine"):
        dtml.train(prepared / "prepared", mine, **TINY)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
