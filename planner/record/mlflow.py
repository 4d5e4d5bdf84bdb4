"""MLflow observer: one parent run per study, one nested run per trial.

The Optuna storage is the source of truth; MLflow is where people look.  The
MLflow run id of each trial is stored on the Optuna trial (``mlflow_run_id``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

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


# MLflow's experiment kind (tag ``mlflow.experimentKind``): "custom_model_development" marks a classic
# model-development experiment (runs, metrics, charts), as opposed to "genai_development" (traces)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# The MLflow UI (3.x) opens experiments in its GenAI or its "Model training" mode after a switch it keeps in
# the browser (default GenAI); the URL parameter overrides it
WORKFLOW_PARAM = "workflowType=machine_learning"
VIEW_TAG = "mlflow.sharedViewState."  # a saved runs-table view, opened by ?viewStateShareKey=KEY
# the columns a person picks a deployment by (the runs table shows none of them unless selected)
VIEW_COLUMNS = ["metrics.`latency_ms`", "metrics.`quality_loss`", "metrics.`throughput`", "tags.`planner.pareto`"]


def view_key(study_name: str) -> str:
    import re

    return "planner-" + re.sub(r"[^A-Za-z0-9_-]+", "_", study_name)[:200]


def view_path(experiment_id: str, study_name: str) -> str:
    """The UI route (after the server's address) of a study's runs view: its trials, fastest first."""
    return f"#/experiments/{experiment_id}/runs?{WORKFLOW_PARAM}&viewStateShareKey={view_key(study_name)}"


def study_views(tracking_uri: str) -> list[tuple[str, str]]:
    """(experiment name, UI route) of every study view saved in a tracking store, newest experiment first;
    [] when the store cannot be read."""
    from mlflow.exceptions import MlflowException

    try:
        exps = tracking_client(tracking_uri).search_experiments(order_by=["last_update_time DESC"])
    except (MlflowException, OSError):  # no store there (yet): nothing to link
        return []
    out = []
    for e in exps:
        for k in sorted(e.tags):
            if k.startswith(VIEW_TAG + "planner-"):
                out.append((e.name, f"#/experiments/{e.experiment_id}/runs?{WORKFLOW_PARAM}&viewStateShareKey={k[len(VIEW_TAG):]}"))
    return out


def run_name(number: int, label: str, batch_size) -> str:
    """``#7 onnxruntime int8_dynamic b=1``: the trial's deployment without its option values (they are params)."""
    import re

    short = re.sub(r"\[[^\]]*\]", "", label or "").strip() or "trial"
    return f"#{number} {short} b={batch_size}"


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
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location,
                                                               tags=dict([EXPERIMENT_KIND]))
        else:
            self.experiment_id = exp.experiment_id
            if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:  # made by an older planner
                self.client.set_experiment_tag(self.experiment_id, *EXPERIMENT_KIND)
        self.experiment = experiment
        self.parent_run_id: str | None = None
        self.study_name: str | None = None

    # ---------------------------------------------------------------- study
    def start_study(self, study_name: str, parent_run_id: str | None, tags: dict[str, str], params: dict[str, Any],
                    files: Iterable[Path] = ()) -> str:
        self.study_name = study_name
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

    def close_dangling(self, left_open: Callable[[int | None], str | None]) -> int:
        """Mark child runs left RUNNING by a gone worker as FAILED.  ``left_open(trial number)`` (None: a run without
        one) says, when it is asked, how a RUNNING run of that trial is closed: the ``planner.status`` tag to give it
        (``worker_lost``, ``interrupted``), or None to leave it to its live worker.  Runs are matched to trials by
        their ``planner.trial`` tag, set when the run is created (a trial's ``mlflow_run_id`` attribute is written
        only after that).  The question is asked per run, after the runs were listed: a trial asked, or one finished
        but still uploading its artifacts, by a live worker while this one started is left alone."""
        n = 0
        for run in self.child_runs():
            if run.info.status != "RUNNING":
                continue
            try:
                number = int(run.data.tags.get("planner.trial", ""))
            except ValueError:
                number = None
            status = left_open(number)
            if status is None:
                continue
            self.client.set_tag(run.info.run_id, "planner.status", status)
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
        study = {"planner.study": self.study_name} if self.study_name else {}
        run = self.client.create_run(
            self.experiment_id, run_name=run_name(number, tags.get("planner.label", ""), tags.get("batch_size", "?")),
            tags={"mlflow.parentRunId": self.parent_run_id, "planner.kind": "trial", "planner.trial": str(number),
                  **study, **tags},
        )
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def end_trial(self, run_id: str, metrics: dict[str, float], tags: dict[str, str], directory: Path | None,
                  files: Iterable[str], ok: bool) -> None:
        from mlflow.entities import Metric, RunTag

        import time

        now = int(time.time() * 1000)
        metrics = dict(metrics)
        if not ok:  # what a failed trial measured, under the names every trial uses (the charts plot them)
            if _is_number(metrics.get("early_exit_median_ms")):
                metrics.setdefault("latency_ms", metrics["early_exit_median_ms"])
            if _is_number(metrics.get("quality.quality_loss")):
                metrics.setdefault("quality_loss", metrics["quality.quality_loss"])
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

    def log_summary(self, metrics: dict[str, float], note_md: str) -> None:
        """The study's summary metrics and its Markdown description (MLflow's run note) on the parent run."""
        import time

        from mlflow.entities import Metric, RunTag

        assert self.parent_run_id
        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, 0) for k, v in metrics.items() if _is_number(v)]
        self.client.log_batch(self.parent_run_id, metrics=ms, tags=[RunTag("mlflow.note.content", note_md)])

    def save_view(self, study_name: str) -> str:
        """Save the runs-table view of a study (its runs, fastest first, with the latency, quality and Pareto
        columns) on the experiment; returns its UI route (`view_path`)."""
        view = {
            "searchFilter": f"tags.planner.study = '{study_name}'" if "'" not in study_name else "",
            "orderByKey": "metrics.`latency_ms`", "orderByAsc": True,
            "selectedColumns": VIEW_COLUMNS, "runListHidden": False, "viewMaximized": False,
            # the chart view opens on latency against quality loss, one point per trial
            "compareRunSections": [{"uuid": "planner-pick", "name": "Latency vs quality loss", "display": True,
                                    "isReordered": False, "deleted": False, "isGenerated": False}],
            "compareRunCharts": [{"uuid": "planner-latency-quality", "type": "SCATTER", "metricSectionId": "planner-pick",
                                  "xaxis": {"key": "latency_ms", "type": "METRIC"},
                                  "yaxis": {"key": "quality_loss", "type": "METRIC"},
                                  "runsCountToCompare": 100, "deleted": False, "isGenerated": False,
                                  "displayName": "latency_ms vs quality_loss"}],
        }
        self.client.set_experiment_tag(self.experiment_id, VIEW_TAG + view_key(study_name), json.dumps(view))
        return view_path(self.experiment_id, study_name)

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
