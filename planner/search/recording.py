"""The study's MLflow side, an observer of the loop (as optuna-integration's ``MLflowCallback``): the parent
run with the study's inputs, one run per trial opened when its worker starts and closed with its metrics,
artifacts and manifest, the front published at the end.  A recording fault warns and never costs the study."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from planner.config import TrialConfig
from planner.errors import FailReason


class StudyRecording:
    def __init__(self, rec, study, *, study_name: str, experiment: str, study_dir: Path, model, target, space,
                 model_info: dict[str, Any], sampler: str, objectives):
        self.rec, self.study = rec, study
        self.study_name, self.experiment, self.study_dir = study_name, experiment, study_dir
        self.model, self.target, self.space, self.model_info = model, target, space, model_info
        self.sampler, self.objectives = sampler, objectives

    @property
    def parent_run_id(self) -> str | None:
        return self.rec.parent_run_id

    def start(self, left_open) -> None:
        """Open (or resume) the parent run with the study's inputs; close runs left open by gone workers
        (``left_open``: `planner.search.store.StudyStore.left_open`, asked per run)."""
        import yaml

        snap = self.study_dir / "inputs"
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "target.yaml").write_text(self.target.to_yaml())
        (snap / "search_space.yaml").write_text(yaml.safe_dump(self.space.model_dump(mode="json", exclude_none=True), sort_keys=False))
        c = self.target.constraints
        params = {
            "study": self.study_name, "model": self.model.ref, "model_hash": self.model_info["model_hash"],
            "target": self.target.name, "search_space": self.space.name, "sampler": self.sampler,
            "objectives": ",".join(o.name for o in self.objectives), "latency_percentile": c.latency_percentile,
            "max_quality_loss": c.max_quality_loss, "latency_slo_ms": c.latency_slo_ms,
            "synthetic_data": self.model_info.get("synthetic_data"), "param_count": self.model_info.get("param_count"),
        }
        tags = {"planner.study": self.study_name, "planner.model": self.model.name, "planner.target": self.target.name,
                "planner.data": "synthetic" if self.model_info.get("synthetic_data") else "user"}
        if self.target.traffic is not None:  # the latency of this study is served latency under this traffic
            tr = self.target.traffic
            params.update({"traffic": tr.describe(), "traffic.percentile": tr.percentile, "traffic.slo_ms": tr.slo_ms})
            tags["planner.traffic"] = tr.describe()
        known = self.study.user_attrs.get("mlflow_parent_run_id")
        parent = self.rec.start_study(self.study_name, known, tags, params, [snap / "target.yaml", snap / "search_space.yaml"])
        if known != parent:
            self.study.set_user_attr("mlflow_parent_run_id", parent)
        self.study.set_user_attr("mlflow_experiment", self.experiment)
        self.rec.close_dangling(left_open)

    def trial_started(self, number: int, cfg: TrialConfig, origin: str = "sampler") -> str:
        """``origin``: who proposed it (the tag ``planner.origin``: ``sampler``, ``seed N`` from the space,
        ``composite of #E (engine) and #S (student)`` from `planner.search.compose`)."""
        return self.rec.start_trial(number, {**cfg.flat(), "config_key": cfg.key()}, {
            "backend": cfg.backend, "precision": cfg.precision, "batch_size": str(cfg.batch_size),
            "planner.label": cfg.describe(), "planner.status": "running", "planner.origin": origin,
        })

    def trial_measured(self, run_id: str, number: int, cfg: TrialConfig, res: dict, metrics: dict, violated: str,
                       workdir: Path, params: dict) -> None:
        files = list(res.get("artifacts", []))
        manifest = self._manifest(workdir, files, number, cfg, metrics, res, params)
        status = "infeasible" if violated else "ok"
        tags = {"planner.status": status, "planner.violated": violated} if violated else {"planner.status": status}
        self.rec.end_trial(run_id, metrics, tags, workdir, files + [manifest, "worker.log"], ok=True)

    def trial_failed(self, run_id: str, res: dict, reason: str, message: str, workdir: Path | None) -> None:
        partial = {f"quality.{k}": v for k, v in (res.get("quality") or {}).items()}
        if res.get("early_exit_median_ms"):
            partial["early_exit_median_ms"] = res["early_exit_median_ms"]
        tags = {"planner.status": "failed", "planner.fail_reason": reason, "planner.fail_message": message[:4000]}
        self.rec.end_trial(run_id, partial, tags, workdir, ["worker.log"] if workdir else [], ok=False)

    def trial_abandoned(self, run_id: str) -> None:
        try:
            self.rec.end_trial(run_id, {}, {"planner.status": "interrupted"}, None, [], ok=False)
        except Exception:  # noqa: BLE001 -- already on the way out of a fault
            pass

    def trial_stopped(self, run_id: str, detail: dict, message: str, workdir: Path) -> None:
        """A staged distillation stopped the trial's student (not a failure of the candidate's engine)."""
        self.rec.end_trial(run_id, {"quality_loss_at_stop": float(detail.get("quality_loss", 0.0)),
                                    "distill_steps_at_stop": float(detail.get("steps", 0))},
                           {"planner.status": "stopped", "planner.fail_reason": FailReason.DISTILL_STOPPED.value,
                            "planner.fail_message": message[:4000]}, workdir, ["worker.log"], ok=False)

    def workers_lost(self, run_ids: list[str]) -> None:
        """Close the runs of trials whose workers died elsewhere (failed as stale)."""
        for run_id in run_ids:
            try:
                if self.rec.client.get_run(run_id).info.status == "RUNNING":
                    self.rec.client.set_tag(run_id, "planner.status", "worker_lost")
                    self.rec.client.set_terminated(run_id, status="FAILED")
            except Exception:  # noqa: BLE001 -- recording the loss must not stop this worker
                pass

    def _manifest(self, workdir: Path, files: list[str], number: int, cfg: TrialConfig, metrics, res, params) -> str:
        from planner.record.manifest import build_manifest, write_manifest

        m = build_manifest(
            directory=workdir, files=files,
            model={**self.model.to_dict(), "hash": self.model_info["model_hash"], "inputs": self.model_info["inputs"],
                   "output_kind": self.model_info.get("output_kind"),
                   # each output's batch axis where one is not 0 (the reference's; MLflow Model and bundle read it)
                   **({"output_axes": self.model_info["output_axes"]} if self.model_info.get("output_axes") else {})},
            target=self.target.model_dump(mode="json"),
            trial={"study": self.study_name, "number": number, "config": cfg.to_dict(), "params": params,
                   "config_key": cfg.key()},
            metrics=metrics,
            backend_info={"name": cfg.backend, **(res.get("build_info") or {}),
                          **({"measured_on": res["device_info"]} if res.get("device_info") else {})},  # the GPU, CUDA
            reproduce=f"planner export --study {self.study_name} --trial {number} --out DIR",
        )
        write_manifest(workdir / "manifest.json", m)
        return "manifest.json"

    def confirmation(self, summary: dict, table_md: str, run_ids: dict[int, str]) -> None:
        try:
            self.rec.log_confirmation(summary, table_md, run_ids)
        except Exception as e:  # noqa: BLE001 -- the study attribute is the source of truth; MLflow only shows it
            print(f"warning: could not record the re-measurement in MLflow: {e}", file=sys.stderr)

    def publish(self, front) -> None:
        """Tag the front's runs, log its table, register it and draw the plots."""
        from planner.select.pareto import markdown_table, table_rows

        self.rec.mark_pareto({p.run_id for p in front if p.run_id}, markdown_table(front), table_rows(front))
        try:  # registry versions + aliases, plots on the parent run: warn, never fail the study
            from planner.select.registry import publish_study

            publish_study(self.study, self.rec, front, self.target, self.model.name)
        except Exception as e:  # noqa: BLE001
            print(f"warning: could not register the Pareto front / log plots: {e}", file=sys.stderr)

    def finish(self, front, stopped: str, status: str) -> None:
        try:
            self.publish(front)
            self.rec.client.set_tag(self.rec.parent_run_id, "planner.stopped", stopped)
            self.rec.finish_study(status)
        except Exception as e:  # noqa: BLE001 -- recording the summary must not hide the study's own outcome
            print(f"warning: could not record the Pareto summary in MLflow: {e}", file=sys.stderr)
