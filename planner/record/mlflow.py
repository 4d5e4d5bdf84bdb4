"""MLflow observer: one parent run per study, one nested run per trial.

The Optuna storage is the source of truth; MLflow is where people look.  The
MLflow run id of each trial is stored on the Optuna trial (``mlflow_run_id``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from planner.errors import ConfigError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# fail fast on an unreachable tracking server instead of minutes of retries
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")


def redact(uri: str) -> str:
    """Hide the password of a ``scheme://user:password@host`` URI."""
    import re

    return re.sub(r"(://[^:/@]+):[^@/]+@", r"\1:***@", uri)


def tracking_client(tracking_uri: str):
    import logging

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)

    return MlflowClient(tracking_uri=tracking_uri)


class MlflowRecorder:
    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None):
        self.tracking_uri = tracking_uri
        try:
            self.client = tracking_client(tracking_uri)
            exp = self.client.get_experiment_by_name(experiment)
        except Exception as e:
            raise ConfigError(f"--tracking-uri {redact(tracking_uri)}: cannot reach the MLflow tracking store ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        if exp is None:
            location = (artifact_root / experiment.replace("/", "_")).as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        self.experiment = experiment
        self.parent_run_id: str | None = None

    # ---------------------------------------------------------------- study
    def start_study(self, study_name: str, parent_run_id: str | None, tags: dict[str, str], params: dict[str, Any],
                    files: Iterable[Path] = ()) -> str:
        if parent_run_id:
            try:
                run = self.client.get_run(parent_run_id)
                self.parent_run_id = run.info.run_id
                self.client.update_run(self.parent_run_id, status="RUNNING")
                return self.parent_run_id
            except Exception:
                pass  # deleted in the UI: start a fresh parent run
        run = self.client.create_run(self.experiment_id, run_name=study_name, tags={**tags, "planner.kind": "study"})
        self.parent_run_id = run.info.run_id
        self._log_params(self.parent_run_id, params)
        for f in files:
            self.client.log_artifact(self.parent_run_id, str(f))
        return self.parent_run_id

    def close_dangling(self, keep: set[int] = frozenset(), lost: set[int] = frozenset()) -> int:
        """Mark child runs left RUNNING by an interrupted process as FAILED, except runs of trials in ``keep``
        (trial numbers still RUNNING in Optuna: live workers, whose run may not yet be linked from the trial).

        Runs of trials in ``lost`` (failed because their process died) are tagged ``worker_lost``, the others
        ``interrupted``. Runs are matched to trials by their ``planner.trial`` tag, which is set when the run is
        created: a trial's ``mlflow_run_id`` attribute is written only after that, so matching on it would close
        a live worker's brand-new run."""
        n = 0
        for run in self.child_runs():
            if run.info.status != "RUNNING":
                continue
            try:
                number = int(run.data.tags.get("planner.trial", ""))
            except ValueError:
                number = None
            if number in keep:
                continue
            self.client.set_tag(run.info.run_id, "planner.status", "worker_lost" if number in lost else "interrupted")
            self.client.set_terminated(run.info.run_id, status="FAILED")
            n += 1
        return n

    def child_runs(self) -> list:
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'", max_results=50000
        )

    def finish_study(self, status: str = "FINISHED") -> None:
        if self.parent_run_id:
            self.client.set_terminated(self.parent_run_id, status=status)

    # ---------------------------------------------------------------- trials
    def start_trial(self, number: int, params: dict[str, Any], tags: dict[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id, run_name=f"trial-{number:04d}",
            tags={"mlflow.parentRunId": self.parent_run_id, "planner.kind": "trial", "planner.trial": str(number), **tags},
        )
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def end_trial(self, run_id: str, metrics: dict[str, float], tags: dict[str, str], directory: Path | None,
                  files: Iterable[str], ok: bool) -> None:
        from mlflow.entities import Metric, RunTag

        import time

        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, 0) for k, v in metrics.items() if _is_number(v)]
        ts = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        for i in range(0, max(len(ms), len(ts)), 500):
            self.client.log_batch(run_id, metrics=ms[i:i + 500], tags=ts[i:i + 500])
        if directory is not None:
            for f in files:
                p = directory / f
                if p.is_file():
                    sub = str(Path("engine") / Path(f).parent) if Path(f).parent != Path(".") else "engine"
                    self.client.log_artifact(run_id, str(p), artifact_path=sub if f != "manifest.json" else None)
        self.client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")

    # ---------------------------------------------------------------- pareto
    def mark_pareto(self, pareto_run_ids: set[str], table_md: str, table_rows: list[dict], extra_files: Iterable[Path] = ()) -> None:
        for run in self.child_runs():
            rid = run.info.run_id
            self.client.set_tag(rid, "planner.pareto", "true" if rid in pareto_run_ids else "false")
        assert self.parent_run_id
        self.client.log_text(self.parent_run_id, table_md, "pareto.md")
        self.client.log_text(self.parent_run_id, json.dumps(table_rows, indent=2, default=str), "pareto.json")
        self.client.set_tag(self.parent_run_id, "planner.pareto_size", str(len(pareto_run_ids)))
        for f in extra_files:
            self.client.log_artifact(self.parent_run_id, str(f))

    def log_confirmation(self, summary: dict[str, Any], table_md: str, run_ids: dict[int, str | None]) -> None:
        """The re-measurement of the fastest trials (planner.select.confirm): ``confirmed.*`` metrics and a
        ``planner.confirmed`` tag on each candidate's run, the table on the study's parent run."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for n, c in summary["trials"].items():
            rid = run_ids.get(int(n))
            if not rid:
                continue
            ms = [Metric(f"confirmed.{k}", float(c[k]), now, 0) for k in
                  ("latency_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput", "ratio_to_study")
                  if _is_number(c.get(k))]
            self.client.log_batch(rid, metrics=ms)
            self.client.set_tag(rid, "planner.confirmed", "slo_violated" if c.get("slo_violated") else "true")
        for n, f in summary["failed"].items():
            rid = run_ids.get(int(n))
            if rid:
                self.client.set_tag(rid, "planner.confirmed", f"failed: {f['reason']}: {f['message']}"[:5000])
        for n, why in summary.get("skipped", {}).items():  # left out to fit the study's --timeout
            rid = run_ids.get(int(n))
            if rid:
                self.client.set_tag(rid, "planner.confirmed", f"skipped: {why}"[:5000])
        assert self.parent_run_id
        self.client.log_text(self.parent_run_id, table_md, "confirmation.md")
        self.client.log_text(self.parent_run_id, json.dumps(summary, indent=2, default=str), "confirmation.json")

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        ps = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(ps), 100):
            self.client.log_batch(run_id, params=ps[i:i + 100])


def _is_number(v) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
