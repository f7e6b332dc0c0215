"""Run a per-frame job over a dataset: in this process, on local worker processes, or on Ray.

A job (``FrameJob``) lists its tasks (one per keyframe) and turns one task into output files
(bytes); the runner decides where that runs and owns everything around it:

* **Outputs** are written by the driver only, each atomically (a temporary file in the same
  folder, then ``os.replace``), so a crash never leaves a half-written file under a real name.
* **Manifest** (``manifest.json`` in the output folder): the job name, its configuration and
  its SHA-256, and per task the files written with their SHA-256 and size. It holds nothing
  that depends on how or when the job ran (no times, no worker ids), so two runs of one job on
  one input write byte-identical manifests whatever the executor or number of workers. It is
  rewritten atomically at most every ``manifest_interval_s`` seconds and at the end.
* **Resume**: a task whose files are listed in the manifest for the same configuration, exist
  and still have the recorded SHA-256 is skipped (``verified``); anything else runs again.
* **Summary** (``RunSummary``, also written to ``run_summary.json``): tasks done, skipped and
  failed (with the reason), wall time and seconds per frame. A failing task does not stop the
  others.

Executors: ``local`` with ``workers=1`` runs in this process (numba uses every core);
``workers=N`` starts N spawned processes, each limited to ``cpu_count // N`` numba threads.
``ray`` submits one Ray task per frame to a running cluster (``address``) or to a local Ray
instance it starts with ``workers`` CPUs (install the ``distributed`` extra).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from avfusion.errors import AVFusionError, ConfigError

__all__ = [
    "MANIFEST_NAME",
    "FrameJob",
    "FrameResult",
    "FrameTask",
    "RunSummary",
    "atomic_write",
    "run_job",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SUMMARY_NAME = "run_summary.json"
MANIFEST_FORMAT = "avfusion-run-manifest"
MANIFEST_VERSION = 1

#: progress(done, total, task key, seconds of that task)
ProgressFn = Callable[[int, int, str, float], object]


@dataclass(frozen=True)
class FrameTask:
    """One unit of work: ``key`` (unique, e.g. a sample token) and metadata for the job."""

    key: str
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FrameResult:
    """What a task produced: ``files`` (relative POSIX path → bytes) and JSON-able ``info``
    recorded in the manifest (keep it deterministic: no times)."""

    key: str
    files: Mapping[str, bytes]
    info: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


class FrameJob(Protocol):
    """A picklable per-frame job. ``__call__`` runs in a worker; raise to fail one task."""

    @property
    def name(self) -> str: ...

    def config(self) -> dict[str, Any]: ...
    def tasks(self) -> list[FrameTask]: ...
    def __call__(self, task: FrameTask) -> FrameResult: ...


@dataclass
class RunSummary:
    """How a run went. ``failed``: task key → reason."""

    job: str
    executor: str
    workers: int
    total: int
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    task_seconds: list[float] = field(default_factory=list)

    @property
    def seconds_per_frame(self) -> float:
        """Mean compute time per frame done (in the worker)."""
        return sum(self.task_seconds) / len(self.task_seconds) if self.task_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "executor": self.executor,
            "workers": self.workers,
            "total": self.total,
            "done": self.done,
            "skipped_verified": self.skipped,
            "failed": dict(sorted(self.failed.items())),
            "wall_s": round(self.wall_s, 3),
            "seconds_per_frame": round(self.seconds_per_frame, 4),
        }


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def _safe_relpath(rel: str, key: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\0" in rel:
        raise AVFusionError(
            f"task {key}: output path {rel!r} must be relative and stay inside the output folder"
        )
    return p


def _config_sha(job: str, config: Mapping[str, Any]) -> str:
    return _sha256(json.dumps({"job": job, "config": config}, sort_keys=True).encode())


class _Manifest:
    def __init__(self, out_dir: Path, job: FrameJob, interval_s: float) -> None:
        self.path = out_dir / MANIFEST_NAME
        self.job = job.name
        self.config = job.config()
        self.sha = _config_sha(job.name, self.config)
        self.entries: dict[str, dict[str, Any]] = {}
        self.interval_s = interval_s
        self._last_write = 0.0
        self._dirty = False
        if self.path.is_file():
            try:
                old = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                logger.warning(
                    "%s: unreadable manifest (%s); every task runs again", self.path, exc
                )
                return
            if old.get("format") != MANIFEST_FORMAT or old.get("config_sha256") != self.sha:
                logger.warning(
                    "%s: written for another job or configuration; every task runs again",
                    self.path,
                )
                return
            self.entries = dict(old.get("tasks", {}))

    def verified(self, key: str, out_dir: Path) -> bool:
        entry = self.entries.get(key)
        if not entry or not entry.get("files"):
            return False
        return all(
            _file_sha256(out_dir / rel) == meta.get("sha256")
            for rel, meta in entry["files"].items()
        )

    def record(self, result: FrameResult) -> None:
        self.entries[result.key] = {
            "files": {
                rel: {"sha256": _sha256(data), "bytes": len(data)}
                for rel, data in sorted(result.files.items())
            },
            "info": dict(result.info),
        }
        self._dirty = True

    def forget(self, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            self._dirty = True

    def write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._dirty or (not force and now - self._last_write < self.interval_s):
            return
        doc = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "job": self.job,
            "config": self.config,
            "config_sha256": self.sha,
            "tasks": dict(sorted(self.entries.items())),
        }
        atomic_write(self.path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
        self._last_write = now
        self._dirty = False


# --------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------


def _run_one(job: FrameJob, task: FrameTask) -> FrameResult:
    """Run one task, turning any exception into a failed result with a reason."""
    start = time.perf_counter()
    try:
        result = job(task)
    except AVFusionError as exc:
        return FrameResult(task.key, {}, error=str(exc), seconds=time.perf_counter() - start)
    except Exception as exc:  # a bug or an unexpected input: report it, keep the others going
        logger.exception("task %s failed", task.key)
        return FrameResult(task.key, {}, error=f"{type(exc).__name__}: {exc}",
                           seconds=time.perf_counter() - start)  # fmt: skip
    return FrameResult(result.key, result.files, result.info, time.perf_counter() - start)


def _init_worker(numba_threads: int) -> None:
    try:
        import numba

        numba.set_num_threads(max(1, min(numba_threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    except Exception:  # pragma: no cover - numba always importable in avfusion
        pass


def _local_pool(job: FrameJob, tasks: list[FrameTask], workers: int) -> Iterable[FrameResult]:
    if workers == 1:
        for task in tasks:
            yield _run_one(job, task)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(threads,)) as pool:  # fmt: skip
        futures = {pool.submit(_run_one, job, t): t for t in tasks}
        try:
            for fut in cf.as_completed(futures):
                try:
                    yield fut.result()
                except Exception as exc:  # the worker process died
                    yield FrameResult(futures[fut].key, {}, error=f"worker failed: {exc!r}")
        finally:
            for fut in futures:
                fut.cancel()


def _ray_pool(
    job: FrameJob, tasks: list[FrameTask], workers: int, address: str | None
) -> Iterable[FrameResult]:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "the ray executor needs Ray: pip install 'avfusion[distributed]'"
        ) from exc
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(_run_one)
        job_ref = ray.put(job)
        pending = {remote.remote(job_ref, t): t for t in tasks}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                task = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as exc:  # a worker crash or a lost node
                    yield FrameResult(task.key, {}, error=f"ray task failed: {exc!r}")
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def run_job(
    job: FrameJob,
    out_dir: str | os.PathLike[str],
    *,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    progress: ProgressFn | None = None,
    manifest_interval_s: float = 2.0,
) -> RunSummary:
    """Run every task of ``job`` not already done and verified; write outputs, manifest and
    ``run_summary.json`` under ``out_dir``. See the module docstring."""
    if executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    if address and executor != "ray":
        raise ConfigError("--address is for the ray executor (use --executor ray)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tasks = job.tasks()
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise AVFusionError(f"job {job.name}: task keys are not unique")
    manifest = _Manifest(out, job, manifest_interval_s)
    summary = RunSummary(job.name, executor, workers, len(tasks))
    todo = []
    for task in tasks:
        if manifest.verified(task.key, out):
            summary.skipped += 1
        else:
            manifest.forget(task.key)
            todo.append(task)
    if summary.skipped:
        logger.info("%s: %d of %d tasks already done and verified", job.name, summary.skipped,
                    len(tasks))  # fmt: skip
    done = summary.skipped
    if progress is not None:
        progress(done, len(tasks), "", 0.0)
    results = (
        _local_pool(job, todo, workers)
        if executor == "local"
        else _ray_pool(job, todo, workers, address)
    )
    try:
        for result in results:
            done += 1
            if result.error is not None:
                summary.failed[result.key] = result.error
                logger.warning("task %s failed: %s", result.key, result.error)
            else:
                for rel, data in result.files.items():
                    atomic_write(out / _safe_relpath(rel, result.key), data)
                manifest.record(result)
                summary.done += 1
                summary.task_seconds.append(result.seconds)
                manifest.write()
            if progress is not None:
                progress(done, len(tasks), result.key, result.seconds)
    finally:
        manifest.write(force=True)
        summary.wall_s = time.perf_counter() - start
        atomic_write(out / SUMMARY_NAME, (json.dumps(summary.as_dict(), indent=1) + "\n").encode())
    return summary
