"""What a long step is doing: the progress sink's records and log lines, their
throttling, the phrases `sweep status` and the sweeps' progress lines show, and the
phases a real run reports (training, encoding, each metric, I_q's samples)."""
from __future__ import annotations

import json
import threading

import numpy as np

from disentangle import progress
from disentangle.progress import RunProgress, describe, report, reporting
from disentangle.rundir import RunDir
from disentangle.io import PROGRESS_FILE


def test_describe_says_phase_position_and_unit():
    assert describe(None) == "" and describe({}) == ""
    assert describe({"phase": "training", "done": 450, "total": 1500, "unit": "steps"}) == "training 450/1,500 steps"
    assert (describe({"phase": "encoding", "done": 12288, "total": 73728, "unit": "images"})
            == "encoding 12,288/73,728 images (17%)")
    # metrics are counted from 0 as they start: the first of ten is "1/10"
    assert describe({"phase": "metric dci", "done": 3, "total": 10, "unit": "metrics"}) == "metric dci (4/10)"
    assert describe({"phase": "starting", "done": 0, "total": None, "unit": ""}) == "starting"


def test_nothing_happens_without_a_sink(tmp_path):
    assert progress._sink is None
    report("training", 1, 10, "steps")   # no sink: a no-op, nothing written anywhere
    assert list(tmp_path.iterdir()) == []


def test_run_progress_writes_at_phase_changes_and_throttles_within_one(tmp_path):
    lines: list[str] = []
    sink = RunProgress(RunDir(tmp_path), lines.append, log_every=3600, write_every=3600)
    with reporting(sink):
        report("training", 0, 100, "steps")
        for step in range(1, 100):
            report("training", step, 100, "steps")   # throttled: neither written nor logged
        assert RunDir(tmp_path).read_progress()["done"] == 0
        report("training", 100, 100, "steps")        # the end of a phase is always written
        assert RunDir(tmp_path).read_progress()["done"] == 100
        report("encoding", 10, 40, "images")         # a new phase: written and logged
    assert progress._sink is None                    # uninstalled after the block
    entry = json.loads((tmp_path / PROGRESS_FILE).read_text())
    assert {k: entry[k] for k in ("phase", "done", "total", "unit")} == {
        "phase": "encoding", "done": 10, "total": 40, "unit": "images"}
    assert entry["pid"] > 0 and entry["host"]
    assert [line.split(" ", 2)[2] for line in lines] == ["training 0/100 steps", "encoding 10/40 images"]
    assert all(line.startswith("progress ") for line in lines)


def test_run_progress_logs_every_interval_within_a_phase(tmp_path):
    lines: list[str] = []
    with reporting(RunProgress(RunDir(tmp_path), lines.append, log_every=0.0, write_every=0.0)):
        for step in range(3):
            report("training", step, 3, "steps")
    assert [line.split(" ", 2)[2] for line in lines] == [f"training {k}/3 steps" for k in range(3)]
    assert RunDir(tmp_path).read_progress()["done"] == 2


def test_reports_from_a_thread_pool_are_safe(tmp_path):
    seen: list[str] = []
    sink = RunProgress(RunDir(tmp_path), seen.append, log_every=0.0, write_every=0.0)
    with reporting(sink):
        threads = [threading.Thread(target=lambda k=k: [report("info: I_q", k * 100 + i, 800, "samples")
                                                        for i in range(100)]) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(seen) == 800
    assert RunDir(tmp_path).read_progress()["phase"] == "info: I_q"


def test_an_unreadable_record_reads_as_none(tmp_path):
    (tmp_path / PROGRESS_FILE).write_text("{not json")
    assert RunDir(tmp_path).read_progress() is None
    assert RunDir(tmp_path / "missing").read_progress() is None


def test_i_q_reports_its_samples_as_row_blocks_finish():
    from disentangle.evaluation.information.mutual_information import mutual_information
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(3000, 3)).astype(np.float32)
    logvar = np.full((3000, 3), -2.0, dtype=np.float32)
    calls: list[tuple] = []
    with reporting(lambda *args: calls.append(args)):
        out = mutual_information(mean, logvar, np.random.default_rng(1), min_samples=1000, max_samples=1000)
    phases = {c[0] for c in calls}
    assert phases == {"info: I_q"}
    assert calls[0][1:3] == (0, 1000) and calls[-1][1:3] == (1000, 1000)
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)   # monotone
    assert out["i_q_samples"] == 1000


def test_a_run_reports_training_encoding_and_each_metric(tmp_path, tiny_data_path):
    """A real tiny sweep job: the run's log gets a line per phase, in order."""
    from disentangle import sweep as sw
    run = sw.expand(sw.Study(grid={"beta": [2]}, fixed={"steps": 20, "batch_size": 8, "checkpoint_every": 10,
                                                         "log_every": 10}),
                    data=str(tiny_data_path), threads=1)[0]
    job = {"name": run.name, "run_dir": str(tmp_path / run.name), "config": run.config,
           "metrics": ["mig", "sap"], "eval_seed": 0, "retry_failed": False}
    lines: list[str] = []
    outcome = sw.execute_run(job, echo=lines.append)
    assert outcome["result"] == "done", outcome
    phrases = [line.split(" ", 2)[2] for line in lines]
    n = int(phrases[phrases.index(next(p for p in phrases if p.startswith("encoding")))].split("/")[1].split()[0]
            .replace(",", ""))
    assert phrases == ["starting", "training 0/20 steps", f"encoding 0/{n:,} images", "metric mig (1/2)",
                       "metric sap (2/2)"], phrases
    assert RunDir(job["run_dir"]).read_progress()["phase"] == "metric sap"
