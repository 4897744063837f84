"""THE run directory (``results/<run>/``): its files, its configuration, its status, the
"has training finished" check, its model (loaded with its sha256 check), its scores and
the dataset it is evaluated or drawn on. Training, evaluation, sweeps, the results table
and the figures all go through :class:`RunDir`; nothing else opens these files.

Files::

    config.json      full configuration, package version, data source  (read once, cached)
    checkpoint.pt    latest training state
    model.pt         final weights (state dict, torch.load(weights_only=True))
    train_log.csv    per-step log (write_train_log / read_train_log)
    progress.json    what the step running now is doing (write_progress / read_progress)
    sweep.log        the output of the sweep worker that ran it (log_path, append_log)
    codes.h5         encoder mean / log-variance of every dataset image
    scores.json      one entry per metric (merged under a lock)
    status.json      {"state": running | finished | failed, "reason", "step", "updated",
                      "runtime": {device, threads, pid, host}, "model_sha256",
                      "failure": {"error", "options", "options_sha256"} (a failed run's
                      record: what it ran with, so a sweep with other options retries it)}
    sweep.lock       held (fcntl.flock, :class:`RunLock`) by the process training or evaluating it

Run state (one decision, :meth:`RunDir.state`, for the sweep runner, its executor and
``sweep status``): running (another process holds the lock), failed (status.json says
so), done (training finished and scores.json has every metric asked for), trained
(finished, metrics missing), interrupted (begun, not finished: resumes), not started.

Status policy (one, for every reader and writer):

- reading: no status.json -> None; an unreadable one (not JSON, not an object) reads as
  ``{"state": "unknown", "reason": "<file>: unreadable (...)", "unreadable": True}``; it
  never raises. Training is then not "finished", so the next ``train``/sweep resumes from
  the last checkpoint and writes a fresh status; loading the model refuses, because the
  recorded model checksum cannot be checked.
- writing: a merge-update. ``write_status(state, step=..., reason=..., **fields)`` keeps
  every field it is not given (step, runtime, model_sha256) and sets ``updated``; the
  reason is cleared unless given. Written atomically.

Data policy (one, for evaluate and plots): an explicit dataset (object or path) wins;
else the file the run recorded when it is still there with the same content checksum;
else the dataset's path rule (dSprites: ``$DISENTANGLE_DATA``, data/dsprites.h5,
data/dsprites-rendered.h5; others: ``$DISENTANGLE_DATA_DIR``/<file> or data/<file>); the
dataset is opened through the registry under the name the run recorded (dsprites for runs
from before the field).
:meth:`RunDir.data_record` says whether the result is the data the model trained on
(``matches_training_data``: True / False / None when the run recorded no checksum);
evaluation records that and notes a mismatch, figures (``require_training_data``) refuse it.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from disentangle.config import DEFAULT_DATASET
from disentangle.errors import UserError
from disentangle.io import (CHECKPOINT_FILE, CODES_FILE, CONFIG_FILE, LOCK_FILE, LOG_FILE, MODEL_FILE,
                            PROGRESS_FILE, SCORES_FILE, SCORES_LOCK_FILE, STATUS_FILE, TRAIN_LOG_FILE,
                            WriteError, file_sha256, json_digest, json_ready, open_in_place, read_json,
                            write_json_atomic, write_text_atomic)

# The states of a run, as RunDir.state() decides them (and `sweep status` shows them;
# "queued" is the scheduler's word, added there).
RUN_STATES = ("done", "failed", "running", "queued", "interrupted", "trained", "not started")
# provenance keys copied from the dataset's provenance into each score entry
# (content_check: "unverified" for a file without a recorded checksum, accepted with --unverified-data)
DATA_RECORD_KEYS = ("dataset", "source", "content_sha256", "content_check", "renderer_version", "source_checksum",
                    "path", "num_images", "factor_sizes", "images_seed", "scream_sha256")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class DataCache:
    """Opens each dataset (name, file) once when several runs are evaluated together.

    ``load(path, name)``: dataset ``name`` (a registry name, default dsprites) from
    ``path`` or, without one, by the dataset's path rule; a :class:`~disentangle.data.datasets.Dataset`.
    Without a name a path is opened as whatever toolkit file it is (``open_file``)."""

    def __init__(self):
        self._loaded: dict[tuple, object] = {}

    def load(self, path, name: str | None = None) -> object:
        from disentangle.data.datasets import DSprites, dataset_class, open_dataset, open_file
        if name is None and path is not None:
            resolved = Path(path).resolve()
            key = (None, resolved)
            if key not in self._loaded:
                self._loaded[key] = open_file(resolved)
            return self._loaded[key]
        name = name or DEFAULT_DATASET
        cls = dataset_class(name, path)
        if getattr(cls, "named_by_file", False):
            key = (name, Path(path).resolve() if path else None)
        else:
            key = (name, cls.resolve_path(path).resolve())
        if key not in self._loaded:
            if issubclass(cls, DSprites):
                # dSprites and its variants share one in-memory dSprites file
                base_key = ("dsprites", key[1])
                if base_key not in self._loaded:
                    self._loaded[base_key] = open_dataset("dsprites", key[1])
                self._loaded[key] = (self._loaded[base_key] if name == "dsprites"
                                     else open_dataset(name, key[1], data=self._loaded[base_key].data))
            else:
                self._loaded[key] = open_dataset(name, key[1])
        return self._loaded[key]


class RunDir:
    """One run directory. Cheap to make; config.json is read on first use and cached,
    model.pt is hashed once per content (the hash is reused while the file's inode, size
    and times are unchanged, so a replaced or rewritten model.pt is hashed again)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._saved: dict | None = None
        self._model_hash: tuple[tuple, str] | None = None

    @classmethod
    def of(cls, run: "RunDir | str | os.PathLike") -> "RunDir":
        """``run`` itself when it is a RunDir, else a RunDir for the path."""
        return run if isinstance(run, RunDir) else cls(run)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    # ----------------------------------------------------------------- paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def train_log_path(self) -> Path:
        return self.path / TRAIN_LOG_FILE

    @property
    def codes_path(self) -> Path:
        return self.path / CODES_FILE

    @property
    def scores_path(self) -> Path:
        return self.path / SCORES_FILE

    @property
    def status_path(self) -> Path:
        return self.path / STATUS_FILE

    @property
    def progress_path(self) -> Path:
        return self.path / PROGRESS_FILE

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    def refuse_foreign(self, parameter: str = "out") -> None:
        """Before anything is written into this directory: a ParameterError naming it when
        it exists and is neither empty nor a run directory of this toolkit (a config.json
        that reads as a run configuration, or only what a run leaves before its
        config.json: the lock, the sweep log, a status, progress, stale temporaries). A
        user's own model.pt or train_log.csv is never overwritten by a new run."""
        from disentangle.errors import ParameterError
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise (write_error_of(exc, self.path)) from None
        import stat as _stat
        if not _stat.S_ISDIR(st.st_mode):
            raise ParameterError(parameter, "exists and is not a directory", value=self.path)
        from disentangle.io import refuse_non_regular
        for name in RUN_FILES:   # a directory or FIFO in a run file's place: refused before the work
            refuse_non_regular(self.path / name, links=name not in (LOCK_FILE, LOG_FILE, SCORES_LOCK_FILE))
        if self.config_path.is_file() or self.config_path.is_symlink():
            self.saved()   # UserError when it is not one of ours
            return
        foreign = sorted(p.name for p in self.path.iterdir() if not _leftover(p))
        if foreign:
            shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
            raise ParameterError(parameter, f"is not empty and not a disentangle run directory (no "
                                 f"{CONFIG_FILE}; it holds {shown}); nothing was written: choose an empty "
                                 f"or new directory", value=self.path)

    def require_dir(self) -> "RunDir":
        if not self.path.is_dir():
            raise UserError(f"{self.path}: no such run directory")
        return self

    # ----------------------------------------------------------------- config.json
    def has_config(self) -> bool:
        return self.config_path.is_file()

    def saved(self) -> dict:
        """config.json as written by training ({"config", "data", "package", "created"}),
        read once. UserError naming the file when it is missing or not a run configuration."""
        if self._saved is None:
            path = self.config_path
            try:
                saved = read_json(path)
            except FileNotFoundError:
                raise UserError(f"{path}: no run configuration (is {self.path} a run directory?)") from None
            except (OSError, ValueError) as exc:
                raise UserError(f"{path}: unreadable run configuration ({exc})") from None
            if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
                raise UserError(f"{path}: not a disentangle run configuration (no 'config' entry)")
            from disentangle.config import upgraded
            self._saved = {**saved, "config": upgraded(saved["config"])}   # old key names read as today's
        return self._saved

    def config(self) -> dict:
        """The training configuration (config.json["config"], TrainConfig.to_dict())."""
        return self.saved()["config"]

    def training_data(self) -> dict | None:
        """The dataset provenance recorded when the run trained (config.json["data"]);
        None when the run has no config.json or recorded none."""
        if not self.has_config():
            return None
        data = self.saved().get("data")
        return data if isinstance(data, dict) else None

    def write_config(self, saved: dict) -> None:
        write_json_atomic(self.config_path, saved)
        self._saved = None

    # ----------------------------------------------------------------- status.json
    def status(self) -> dict | None:
        """status.json under the one policy of the module docstring (never raises)."""
        path = self.status_path
        try:
            status = read_json(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return {"state": "unknown", "reason": f"{path}: unreadable ({exc})", "unreadable": True}
        if not isinstance(status, dict):
            return {"state": "unknown", "reason": f"{path}: unreadable (not a JSON object)", "unreadable": True}
        return status

    def write_status(self, state: str, *, step: int | None = None, reason: str | None = None,
                     **fields: Any) -> dict:
        """Merge-update status.json (see the module docstring); returns what was written."""
        status = self.status() or {}
        if status.pop("unreadable", False):
            status = {}
        status.update({"state": state, "reason": reason,
                       "step": int(status.get("step", 0) or 0) if step is None else int(step),
                       "updated": _now()})
        status.pop("failure", None)   # a failure record describes the failure being written, no other
        status.update(fields)
        write_json_atomic(self.status_path, status)
        return status

    # ----------------------------------------------------------------- failure record
    def record_failure(self, reason: str, options: Mapping[str, Any] | None = None,
                       error: str | None = None, **fields: Any) -> dict:
        """Mark the run failed with ``reason`` and what accompanied the failure: the
        options it ran with (``options``: the effective configuration and evaluation
        options, as JSON-able values; recorded with their sha256) and the error class.
        A sweep retries a failed run by itself when it is started with other options
        (:meth:`failure_options_changed`), never with the same ones."""
        record = {"error": error}
        if options is not None:
            record.update(options_sha256=json_digest(options), options=json_ready(options))
        return self.write_status("failed", reason=reason, failure=record, **fields)

    def failure_record(self, status: dict | None = None) -> dict | None:
        """The failure record of a failed run (:meth:`record_failure`), or None (not
        failed, or failed before failures recorded their options)."""
        status = self.status() if status is None else status
        record = (status or {}).get("failure") if (status or {}).get("state") == "failed" else None
        return record if isinstance(record, dict) and isinstance(record.get("options_sha256"), str) else None

    def failure_options_changed(self, options: Mapping[str, Any],
                                status: dict | None = None) -> list[str] | None:
        """For a failed run: the options that differ now from those it failed with
        (dotted names, e.g. ``config.threads``, ``eval_params``); [] when they are the
        same; None when the failure recorded no options (it is then retried only when
        asked)."""
        record = self.failure_record(status)
        if record is None:
            return None
        if record["options_sha256"] == json_digest(options):
            return []
        before = record.get("options") if isinstance(record.get("options"), dict) else {}
        now = json_ready(options)
        changed = []
        for key in sorted(set(before) | set(now)):
            a, b = before.get(key), now.get(key)
            if isinstance(a, dict) and isinstance(b, dict) and key == "config":
                changed += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            elif a != b:
                changed.append(key)
        return changed or ["options"]

    def training_finished(self, status: dict | None = None) -> bool:
        """Training is finished: status.json says so and model.pt is there."""
        status = self.status() if status is None else status
        return bool(status and status.get("state") == "finished" and self.model_path.is_file())

    def missing_metrics(self, names: Sequence[str]) -> list[str]:
        """The metrics of ``names`` scores.json lacks (all of them when it is unreadable:
        the evaluation then says why)."""
        try:
            scores = self.read_scores()
        except UserError:
            scores = {}
        return [m for m in names if m not in scores]

    def state(self, metrics: Sequence[str] = (), *, status: dict | None = None,
              check_lock: bool = True) -> str:
        """The run's state (one of :data:`RUN_STATES` but "queued"; see the module
        docstring). ``metrics``: the metric names the run is to have for "done".
        ``check_lock=False`` for a caller that holds the lock itself or decides before
        taking it; ``status``: status.json when the caller has read it already."""
        if check_lock and is_locked(self.path):
            return "running"
        status = self.status() if status is None else status
        state = (status or {}).get("state")
        if state == "failed":
            return "failed"
        if self.training_finished(status):
            return "trained" if self.missing_metrics(metrics) else "done"
        if state == "running" or self.has_config():
            return "interrupted"
        return "not started"

    # ----------------------------------------------------------------- progress.json, sweep.log
    def read_progress(self) -> dict | None:
        """The last progress record (:mod:`disentangle.progress`), or None (none
        written, or unreadable)."""
        try:
            entry = read_json(self.progress_path)
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) else None

    def write_progress(self, entry: dict) -> None:
        """Replace progress.json; a failed write is dropped (progress must never fail a run)."""
        with contextlib.suppress(OSError, WriteError):
            write_json_atomic(self.progress_path, entry)

    def open_log_fd(self) -> int:
        """sweep.log opened for appending (a file descriptor, for a worker's stdout/stderr)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return open_in_place(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def append_log(self, line: str) -> None:
        """Append one line to sweep.log (best effort: a log line must not fail a run)."""
        with contextlib.suppress(OSError, WriteError):
            self.path.mkdir(parents=True, exist_ok=True)
            fd = open_in_place(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            with open(fd, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    # ----------------------------------------------------------------- train_log.csv
    def write_train_log(self, columns: Sequence[str], rows: Sequence[Sequence[float]]) -> None:
        """train_log.csv, atomically: the step as an integer, every other value as repr(float)."""
        import csv
        import io
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([int(row[0])] + [repr(float(v)) for v in row[1:]])
        write_text_atomic(self.train_log_path, buf.getvalue())

    def read_train_log(self):
        """train_log.csv as a DataFrame; UserError naming it when missing, empty or damaged."""
        import pandas as pd
        path = self.train_log_path
        try:
            log = pd.read_csv(path)
        except FileNotFoundError:
            raise UserError(f"{path}: no training log (is {self.path} a run directory?)") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: unreadable ({exc})") from None
        if "step" not in log.columns or log.empty:
            raise UserError(f"{path}: no logged steps yet")
        # every column is a number (write_train_log writes nothing else): anything else is damage
        bad = [c for c in log.columns if not pd.api.types.is_numeric_dtype(log[c])]
        if bad:
            raise UserError(f"{path}: non-numeric values in column(s) {', '.join(map(str, bad[:5]))}; "
                            f"the log is damaged (train_log.csv is rewritten at the next checkpoint)")
        return log

    # ----------------------------------------------------------------- model.pt
    def require_model(self) -> Path:
        """model.pt; UserError naming the directory when there is none."""
        self.require_dir()
        if not self.model_path.is_file():
            raise UserError(f"{self.path}: no {MODEL_FILE} (the run has not finished training; "
                            f"run `disentangle train` with the same options)")
        return self.model_path

    def model_sha256(self) -> str:
        """sha256 of model.pt, hashed again only when the file changed (inode, size, times)."""
        path = self.require_model()
        st = path.stat()
        signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self._model_hash is None or self._model_hash[0] != signature:
            self._model_hash = (signature, file_sha256(path))
        return self._model_hash[1]

    def check_model(self) -> str:
        """The model's sha256, checked against the one training recorded in status.json;
        UserError when they differ or when status.json cannot be read."""
        path = self.require_model()
        status = self.status() or {}
        if status.get("unreadable"):
            raise UserError(f"{path}: cannot check it against the sha256 recorded when training finished: "
                            f"{status['reason']}")
        sha = self.model_sha256()
        expected = status.get("model_sha256")
        if expected and sha != expected:
            raise UserError(f"{path}: sha256 differs from the one recorded in {STATUS_FILE} when training "
                            f"finished; the file was modified or damaged")
        return sha

    def dataset_name(self) -> str:
        """The dataset the run trained on (config.json["config"]["dataset"]; dsprites for runs
        from before the field)."""
        return str(self.config().get("dataset") or DEFAULT_DATASET)

    def channels(self) -> int:
        """The network's image channels: config.json["model"]["channels"], else the dataset's."""
        recorded = (self.saved().get("model") or {}).get("channels")
        if isinstance(recorded, int) and not isinstance(recorded, bool):
            return recorded
        from disentangle.data.datasets import dataset_class
        name = self.dataset_name()
        try:
            return int(dataset_class(name).channels)
        except UserError:
            return 1

    def load_model(self, device: str = "cpu"):
        """(model in eval mode on ``device``, config.json["config"]) of a finished run.
        The weights are checked against the recorded sha256 and read with
        ``torch.load(weights_only=True)``; a missing, truncated, tampered or mismatched
        model file raises UserError naming it."""
        import torch
        from disentangle.models.architectures import VAE
        path = self.require_model()
        cfg = self.config()
        self.check_model()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged zip, a foreign pickle: all mean "not our weights"
            raise UserError(f"{path}: unreadable model file ({type(exc).__name__}); "
                            f"it is truncated, tampered with, or not a state dict") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UserError(f"{path}: not a model state dict")
        # runs from before the architecture field are burgess; before the dataset field, dSprites (1 channel)
        try:
            model = VAE(int(cfg["latent_dim"]), str(cfg["likelihood"]), str(cfg.get("architecture", "burgess")),
                        channels=self.channels())
        except (KeyError, ValueError, TypeError) as exc:   # a damaged config.json: its values
            raise UserError(f"{self.config_path}: not a valid model configuration "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"{path}: weights do not fit the configured model "
                            f"({str(exc).splitlines()[0]})") from None
        return model.to(torch.device(device)).eval(), cfg

    # ----------------------------------------------------------------- scores.json
    @contextlib.contextmanager
    def _scores_lock(self):
        """Serialise read-modify-write of scores.json between processes (two evaluations
        of one run with different metrics must not drop each other's entries)."""
        try:
            import fcntl
        except ImportError:  # not POSIX: atomic rename still protects the file itself
            yield
            return
        fd = open_in_place(self.path / SCORES_LOCK_FILE, os.O_RDWR | os.O_CREAT)
        with open(fd, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def read_scores(self) -> dict:
        """scores.json ({} when absent); UserError naming it when unreadable."""
        path = self.scores_path
        if not path.is_file():
            return {}
        try:
            scores = read_json(path)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: unreadable scores file ({exc}); move it aside to start afresh") from None
        if not isinstance(scores, dict):
            raise UserError(f"{path}: not a scores file (expected a JSON object)")
        return scores

    def merge_scores(self, entries: Mapping[str, dict]) -> dict:
        """Merge ``entries`` into scores.json (other metrics' entries are kept); atomic."""
        with self._scores_lock():
            scores = self.read_scores()
            scores.update(entries)
            write_json_atomic(self.scores_path, scores)
        return scores

    # ----------------------------------------------------------------- its data
    def dataset(self, data=None, cache: DataCache | None = None, require_training_data: bool = False):
        """The dataset to evaluate or draw this run on, by the data policy of the module
        docstring, opened through the registry under the run's dataset name
        (:meth:`dataset_name`). ``data``: a dataset object, a dataset path, or None. With
        ``require_training_data`` a dataset other than the one the run trained on (by
        content checksum) is refused with a UserError naming it."""
        cache = cache or DataCache()
        name = self.dataset_name() if self.has_config() else DEFAULT_DATASET
        if data is not None and not isinstance(data, (str, os.PathLike)):
            chosen = data
        elif data is not None:
            chosen = cache.load(data, name)
        else:
            chosen = None
            trained = self.training_data() or {}
            trained_path = trained.get("path")
            if trained_path and Path(trained_path).is_file():
                candidate = cache.load(trained_path, name)
                if candidate.provenance.get("content_sha256") == trained.get("content_sha256"):
                    chosen = candidate
            if chosen is None:
                try:
                    chosen = cache.load(None, name)
                except UserError as exc:
                    if trained_path and not Path(trained_path).is_file():
                        raise UserError(f"{self.path}: the dataset it trained on, {trained_path}, is gone, "
                                        f"and {exc}") from None
                    raise
        if require_training_data and self.data_record(chosen)["matches_training_data"] is False:
            want = (self.training_data() or {}).get("content_sha256")
            have = chosen.provenance.get("content_sha256")
            raise UserError(f"{chosen.path}: not the dataset run {self.path} was trained on "
                            f"(content sha256 {str(have)[:12]}…, run recorded {str(want)[:12]}…); "
                            f"give the training data file")
        return chosen

    def data_record(self, data) -> dict:
        """The provenance stored with each score, including whether the model trained on
        this very dataset (matched by content checksum; None when the run did not record it)."""
        prov = data.provenance
        record = {k: prov[k] for k in DATA_RECORD_KEYS if k in prov}
        trained_sha = (self.training_data() or {}).get("content_sha256")
        record["matches_training_data"] = (None if not trained_sha
                                           else trained_sha == prov.get("content_sha256"))
        return record


# what a run directory can hold before its config.json is written (a sweep worker's log
# and lock, a failure status, progress; stale temporaries of a killed write)
# (checkpoint.pt: training checks it is one of ours, of this configuration, before writing)
_LEFTOVERS = (LOCK_FILE, LOG_FILE, SCORES_LOCK_FILE, PROGRESS_FILE, CHECKPOINT_FILE)


def _leftover(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    if path.name in _LEFTOVERS:
        return True
    if path.name.startswith(".") and path.name.endswith(".tmp"):
        return True
    if path.name == STATUS_FILE:
        status = RunDir(path.parent).status() or {}
        return not status.get("unreadable") and status.get("state") in ("failed", "running", "unknown")
    return False


# every file a run directory holds (rundir owns them): no --out ever names one of a run's
RUN_FILES = (CONFIG_FILE, CHECKPOINT_FILE, MODEL_FILE, TRAIN_LOG_FILE, CODES_FILE, SCORES_FILE, STATUS_FILE,
             PROGRESS_FILE, LOG_FILE, LOCK_FILE, SCORES_LOCK_FILE)


def refuse_run_file(target: str | os.PathLike, parameter: str = "out") -> None:
    """ParameterError when ``target`` is one of a run directory's own files (report --out
    run/scores.json would replace the run's scores)."""
    from disentangle.errors import ParameterError
    target = Path(target)
    if target.name in RUN_FILES and (target.parent / CONFIG_FILE).is_file():
        raise ParameterError(parameter, f"is the {target.name} of run {target.parent}; no command writes "
                             f"over a run's own files: choose another path", value=target)


def write_error_of(exc: OSError, path) -> Exception:
    from disentangle.io import write_error
    return write_error(exc, path) or UserError(f"{path}: {os.strerror(exc.errno or 0).lower()}")


def load_model(run_dir: "RunDir | str | os.PathLike", device: str = "cpu"):
    """``RunDir(run_dir).load_model(device)``: (model in eval mode, its configuration)."""
    return RunDir.of(run_dir).require_dir().load_model(device)


# --------------------------------------------------------------------------- the run lock
class RunLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``<run>/sweep.lock``.

    The kernel drops the lock when its holder dies (even by SIGKILL), so a stale lock
    never blocks a run. The file's content (pid, host, time of the holder) is only
    informative; it is the one file not renamed into place, because the lock belongs to
    the file's inode."""

    # locks this process holds, by path: flock conflicts between two descriptors even in
    # one process, and train() takes (reentrant) the lock its sweep worker already holds
    _held: dict[str, int] = {}

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None
        self._nested = False

    def acquire(self, tries: int = 2, reentrant: bool = False) -> bool:
        """Take the lock; False when another holder has it. ``reentrant``: succeed at once
        when this process already holds it (train() inside a sweep worker)."""
        key = os.path.realpath(self.path)
        if reentrant and key in RunLock._held:
            RunLock._held[key] += 1
            self._nested = True
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # never through a link, never a FIFO or device: the holder's line is written into it
        fd = open_in_place(self.path, os.O_RDWR | os.O_CREAT)
        for attempt in range(tries):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # a second try: `sweep status` probes locks for an instant
                if attempt + 1 == tries:
                    os.close(fd)
                    return False
                time.sleep(0.2)
        self.fd = fd
        RunLock._held[key] = 1
        with contextlib.suppress(OSError):  # informative only; a full disk must not stop the run
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n".encode(), 0)
        return True

    def release(self) -> None:
        if self._nested:
            RunLock._held[os.path.realpath(self.path)] -= 1
            self._nested = False
            return
        if self.fd is not None:
            RunLock._held.pop(os.path.realpath(self.path), None)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def holder(self) -> str:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with open(fd, "rb") as fh:
                return fh.read(200).decode("utf-8", "replace").strip() or "another process"
        except OSError:
            return "another process"

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(run_dir: str | os.PathLike) -> bool:
    """Whether some process holds the run's lock (probed with a shared lock, for an instant)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # none, or a link/FIFO that acquire() refuses: nobody holds it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def find_runs(results_dir: str | os.PathLike) -> list[Path]:
    """Every directory under ``results_dir`` (itself included) holding a config.json."""
    root = Path(results_dir)
    runs = sorted({p.parent for p in root.rglob(CONFIG_FILE) if p.is_file()})
    # a run directory never contains another run: skip anything nested inside one
    return [r for r in runs if not any(parent in runs for parent in r.parents)]
