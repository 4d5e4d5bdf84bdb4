"""Command-line interface.  Thin: parses, validates, calls the library; heavy imports live inside commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from planner.errors import ConfigError, PlannerError

app = typer.Typer(
    help="planner: find the fastest deployment of a model that meets your quality bar and latency SLO, by measuring.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
targets_app = typer.Typer(help="List, show and validate hardware targets.", no_args_is_help=True)
spaces_app = typer.Typer(help="List, show and validate search spaces.", no_args_is_help=True)
app.add_typer(targets_app, name="targets")
app.add_typer(spaces_app, name="spaces")

HomeOpt = typer.Option(None, "--home", help="State folder (Optuna/MLflow sqlite, caches). Default: $PLANNER_HOME or ./.planner")


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


# ------------------------------------------------------------------ optimize
@app.command()
def optimize(
    model: str = typer.Option(..., "--model", "-m", help="zoo name, file.py:factory, package.module:factory, model.onnx, hf:DIR (a local Hugging Face model directory) or model.yaml"),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="target YAML or built-in name (default: this host, as `planner probe` describes it: its precisions, e.g. bf16 only with AVX512-BF16/AMX)"),
    space: Optional[str] = typer.Option(None, "--space", "-s", help="search space YAML or built-in name (default: 'llm' with --workload, else 'default')"),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="candidates this process measures now (default 20; a proposal already measured is answered from the study and does not count; unbounded with --study-trials)"),
    study_trials: Optional[int] = typer.Option(None, "--study-trials", help="stop once the study holds N finished trials (measured, duplicate, stopped or failed), all workers counted"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="stop starting trials after this many seconds; the re-measurement of the fastest fits in what is left"),
    trial_timeout: float = typer.Option(900.0, "--trial-timeout", help="seconds allowed per candidate (compile+measure)"),
    study: Optional[str] = typer.Option(None, "--study", help="study name; an existing study resumes"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: sqlite in the home folder)"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: sqlite in the home folder)"),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe | nsga2 | random | grid"),
    seed: Optional[int] = typer.Option(0, "--seed", help="sampler seed"),
    objectives: Optional[str] = typer.Option(None, "--objectives", help="comma list of latency, quality, throughput, memory, size; with traffic also sustained; with --workload also ttft, tpot, tokens (default: latency,quality or ttft,tpot,quality)"),
    workload: Optional[str] = typer.Option(None, "--workload", "-w", help="LLM workload YAML: measure a decoder's TTFT/TPOT against its SLO"),
    inputs: Optional[str] = typer.Option(None, "--inputs", help="input shapes without batch axis: NAME:DIMxDIM[:DTYPE][:batch=AXIS|none],... (batch=AXIS: the batch axis's place in the full shape, default 0; none: a scalar or constant)"),
    output: Optional[str] = typer.Option(None, "--output", help="comma list of the outputs quality is judged on (default: logits, else last_hidden_state, else the first output)"),
    task: Optional[str] = typer.Option(None, "--task", help="hf:DIR models: the transformers task whose Auto class loads it, where its config names no architecture"),
    output_kind: str = typer.Option("auto", "--output-kind", help="auto | logits | embedding (for the quality metric)"),
    data: Optional[str] = typer.Option(None, "--data", help=".npz of evaluation/calibration inputs (optional 'labels')"),
    evaluator: Optional[str] = typer.Option(None, "--evaluator", help="file.py:fn or module:fn: fn(predict, batch_size) -> {metric: value}, the task metrics of a deployment"),
    evaluator_metric: Optional[str] = typer.Option(None, "--evaluator-metric", help="NAME[:max|min]: the evaluator metric whose drop from fp32 is the quality loss (default: the first, higher is better)"),
    eval_samples: int = typer.Option(32, "--eval-samples", help="evaluation samples for the quality check"),
    early_exit: float = typer.Option(20.0, "--early-exit-factor", help="stop measuring a candidate this many times slower than the best at its batch size (0 = never)"),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help="run a GPU target on a different GPU model"),
    heartbeat: int = typer.Option(30, "--heartbeat", help="seconds between worker heartbeats; a trial silent for 3 beats is failed"),
    retries: int = typer.Option(0, "--retries", help="re-run a trial whose worker died (stale heartbeat) up to N times"),
    compile_workers: int = typer.Option(1, "--compile-workers", help="candidates compiled in parallel; measurement stays one at a time"),
    tvm_tuning_budget: Optional[float] = typer.Option(None, "--tvm-tuning-budget", help="total MetaSchedule tuning seconds for the study (per-trial cap: the tvm option max_tuning_seconds)"),
    confirm: int = typer.Option(3, "--confirm", envvar="PLANNER_CONFIRM", help="after the search, re-measure the K fastest feasible trials in interleaved rounds before naming a winner (0 = off)"),
    confirm_rounds: int = typer.Option(3, "--confirm-rounds", help="rounds of that re-measurement"),
    home: Optional[Path] = HomeOpt,
):
    """Search deployments of MODEL on TARGET (default: this host, probed); log every trial to MLflow; print the Pareto front."""
    from planner.model import parse_input_shapes, parse_model
    from planner.paths import Home
    from planner.search.study import Optimizer, StudyOptions
    from planner.space import load_space
    from planner.target import load_target, probe_host

    errors: list[str] = []

    def collect(fn):
        try:
            return fn()
        except ConfigError as e:
            errors.extend(e.errors)
            return None

    shapes = collect(lambda: parse_input_shapes(inputs)) if inputs else ()
    outs = tuple(o.strip() for o in output.split(",") if o.strip()) if output else ()
    spec = collect(lambda: parse_model(model, shapes or (), output_kind, data, outs, task))
    if spec is not None and (evaluator is not None or evaluator_metric is not None):
        spec = collect(lambda: spec.with_evaluator(evaluator, evaluator_metric))
    tgt = collect(lambda: load_target(target) if target is not None else probe_host())
    spc = collect(lambda: load_space(default_space(space, workload)))
    wl = None
    if workload:
        from planner.llm.workload import load_workload

        wl = collect(lambda: load_workload(workload))
    if eval_samples < 2:
        errors.append(f"--eval-samples {eval_samples}: need at least 2 samples")
    if errors:
        raise ConfigError(errors)
    opts = StudyOptions(
        trials=_trials(trials, study_trials), study_trials=study_trials, timeout=timeout, trial_timeout=trial_timeout, study_name=study, storage=storage,
        tracking_uri=tracking_uri, sampler=sampler, seed=seed, objectives=tuple(objectives.split(",")) if objectives else None,
        eval_samples=eval_samples, early_exit_factor=early_exit or None, allow_mismatch=allow_mismatch,
        heartbeat_seconds=heartbeat, retries=retries, compile_workers=compile_workers,
        tuning_budget_seconds=tvm_tuning_budget, confirm_top_k=confirm, confirm_rounds=confirm_rounds,
    )
    if tvm_tuning_budget is not None and tvm_tuning_budget < 0:
        raise ConfigError(f"--tvm-tuning-budget {tvm_tuning_budget}: must be ≥ 0 seconds")
    _check_scaleout_flags(heartbeat, retries, storage, compile_workers)
    from planner.console import RichReporter

    _run(Optimizer(spec, tgt, spc, Home.resolve(home), opts, RichReporter(_console()), workload=wl))


def default_space(space: Optional[str], workload: Optional[str]) -> str:
    """The space a study searches: ``--space``, else the LLM space for a decoder workload, else 'default'."""
    return space or ("llm" if workload else "default")


def _trials(trials: Optional[int], study_trials: Optional[int]) -> int:
    """This process's trial cap: --trials, else 20, else (with --study-trials) the study's goal decides."""
    if trials is not None:
        return trials
    return 20 if study_trials is None else 1_000_000_000


def _check_scaleout_flags(heartbeat: int, retries: int, storage: Optional[str], compile_workers: int = 1) -> None:
    errors = []
    if compile_workers < 1:
        errors.append(f"--compile-workers {compile_workers}: must be ≥ 1")
    if heartbeat < 1:
        errors.append(f"--heartbeat {heartbeat}: must be ≥ 1 second")
    if retries < 0:
        errors.append(f"--retries {retries}: must be ≥ 0")
    if storage is not None and "://" not in storage:
        errors.append(f"--storage {storage!r}: expected a URL such as sqlite:///study.db or postgresql://user@host/db")
    if errors:
        raise ConfigError(errors)


def _run(opt) -> None:
    try:
        opt.run()
    except KeyboardInterrupt:
        _console(True).print("[yellow]interrupted[/]: finished trials are kept; run the same command to resume.")
        raise typer.Exit(130)


@app.command()
def worker(
    study: str = typer.Option(..., "--study", help="an existing study (created by `planner optimize`)"),
    storage: str = typer.Option(..., "--storage", help="the study's Optuna storage URL, e.g. postgresql://user@db/planner"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="the study's MLflow tracking URI"),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="trials this worker runs (default 20; unbounded with --study-trials)"),
    study_trials: Optional[int] = typer.Option(None, "--study-trials", help="stop once the study holds N finished trials (measured, duplicate, stopped or failed), all workers counted"),
    timeout: Optional[float] = typer.Option(None, "--timeout"),
    trial_timeout: float = typer.Option(900.0, "--trial-timeout"),
    heartbeat: int = typer.Option(30, "--heartbeat"),
    retries: int = typer.Option(0, "--retries"),
    compile_workers: int = typer.Option(1, "--compile-workers"),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch"),
    home: Optional[Path] = HomeOpt,
):
    """Join an existing study as one more worker: model, target and space are read from the study itself."""
    from planner.console import RichReporter
    from planner.paths import Home
    from planner.search.study import StudyOptions, join_study

    _check_scaleout_flags(heartbeat, retries, storage, compile_workers)
    opts = StudyOptions(trials=_trials(trials, study_trials), study_trials=study_trials, timeout=timeout, trial_timeout=trial_timeout, tracking_uri=tracking_uri,
                        heartbeat_seconds=heartbeat, retries=retries, allow_mismatch=allow_mismatch,
                        compile_workers=compile_workers, confirm_top_k=0)  # `planner confirm` once all are done
    _run(join_study(study, storage, Home.resolve(home), opts, RichReporter(_console())))


# ------------------------------------------------------------------ targets
@targets_app.command("list")
def targets_list():
    """Built-in targets."""
    from planner.target import builtin_targets, load_target

    c = _console()
    for name, path in builtin_targets().items():
        t = load_target(path)
        c.print(f"{name:8s} {t.device.kind:5s} {t.description}  [dim]{path}[/]")


@targets_app.command("show")
def targets_show(target: str = typer.Argument(..., help="target YAML or built-in name")):
    """Print a target, validated, with defaults filled in."""
    from planner.target import load_target

    typer.echo(load_target(target).to_yaml(), nl=False)


@targets_app.command("validate")
def targets_validate(files: list[str] = typer.Argument(..., help="target YAML files")):
    """Validate target files; every error is reported."""
    from planner.target import load_target

    _validate_files(files, load_target)


def _validate_files(files: list[str], load) -> None:
    errors = []
    for f in files:
        try:
            load(f)
            typer.echo(f"ok: {f}")
        except ConfigError as e:
            errors.extend(e.errors)
    if errors:
        raise ConfigError(errors)


@app.command()
def probe(out: Optional[Path] = typer.Option(None, "--out", "-o", help="write the YAML here instead of printing it")):
    """Describe this host as a target YAML (first NVIDIA GPU if any, else the CPU)."""
    from planner.target import probe_host

    text = "# written by `planner probe`; edit constraints and measurement to taste\n" + probe_host().to_yaml()
    if out:
        if out.exists():
            raise ConfigError(f"--out {out}: file exists; remove it or choose another path")
        out.write_text(text)
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text, nl=False)


# ------------------------------------------------------------------ spaces
@spaces_app.command("list")
def spaces_list():
    """Built-in search spaces."""
    from planner.space import builtin_spaces, load_space

    c = _console()
    for name, path in builtin_spaces().items():
        s = load_space(path)
        c.print(f"{name:12s} backends: {', '.join(s.backends)}  [dim]{s.description}[/]")


@spaces_app.command("show")
def spaces_show(space: str = typer.Argument(..., help="space YAML or built-in name")):
    """Print a search space, validated."""
    import yaml

    from planner.space import load_space

    typer.echo(yaml.safe_dump(load_space(space).model_dump(mode="json", exclude_none=True), sort_keys=False), nl=False)


@spaces_app.command("validate")
def spaces_validate(files: list[str] = typer.Argument(..., help="search space YAML files")):
    """Validate search space files; every error is reported."""
    from planner.space import load_space

    _validate_files(files, load_space)


# ------------------------------------------------------------------ inventory
@app.command()
def backends():
    """Each backend, whether it is usable here, and how to install it if not."""
    from planner.backends import registry

    c = _console()
    for name in registry.names():
        cls = registry.get(name)
        a = cls.availability()
        state = "[green]usable[/]    " if a.usable else "[red]not usable[/]"
        c.print(f"{name:14s} {state} devices={','.join(cls.devices):8s} input={cls.input_format:5s} "
                f"quant={','.join(cls.quant_schemes)}", soft_wrap=True)
        from rich.markup import escape

        c.print(f"{'':14s} [dim]{escape(a.detail)}[/]", soft_wrap=True)


@app.command()
def models():
    """Built-in zoo models (user models: file.py:factory, package.module:factory, .onnx, hf:DIR, model.yaml)."""
    from planner.zoo import ZOO

    for name, module in ZOO.items():
        typer.echo(f"{name:12s} {module}")


# ------------------------------------------------------------------ results
@app.command()
def pareto(
    study: str = typer.Option(..., "--study", help="study name"),
    policy: Optional[str] = typer.Option(None, "--policy", help="fastest | most-accurate | knee | fastest-within:Q | max-throughput-within:MS"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL"),
    home: Optional[Path] = HomeOpt,
):
    """Print the Pareto front of a study and, with --policy, the pick."""
    from planner.paths import Home
    from planner.select.pareto import parse_policy, pareto_front
    from planner.console import pareto_table

    pol = parse_policy(policy) if policy else None
    st = _load_study(study, storage or Home.resolve(home).optuna_url)
    front = pareto_front(st)
    c = _console()
    c.print(pareto_table(front, title=f"Pareto front of {study} ({len(front)} deployments)"))
    if pol is not None:
        pick = pol.select(front)
        c.print(f"[bold]{pol.name}[/]: " + (f"trial {pick.number} {pick.label} (run {pick.run_id})" if pick else "no deployment satisfies it"))
        if pick is None:
            raise typer.Exit(1)


@app.command()
def confirm(
    study: str = typer.Option(..., "--study", help="study name"),
    top_k: int = typer.Option(3, "--top-k", help="re-measure the K fastest feasible trials"),
    rounds: int = typer.Option(3, "--rounds", help="interleaved rounds"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: sqlite in the home folder)"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: sqlite in the home folder)"),
    trial_timeout: float = typer.Option(900.0, "--trial-timeout", help="seconds allowed per candidate to rebuild, and per round"),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch"),
    home: Optional[Path] = HomeOpt,
):
    """Re-measure the fastest trials of a study in interleaved rounds and publish its front again
    (`planner optimize` does this at its end; run it yourself once every worker of a shared study is done)."""
    from planner.console import RichReporter, pareto_table
    from planner.paths import Home
    from planner.search.study import StudyOptions, join_study

    errors = [f"--top-k {top_k}: must be ≥ 1"] * (top_k < 1) + [f"--rounds {rounds}: must be ≥ 1"] * (rounds < 1)
    if errors:
        raise ConfigError(errors)
    h = Home.resolve(home)
    opts = StudyOptions(trial_timeout=trial_timeout, tracking_uri=tracking_uri, allow_mismatch=allow_mismatch,
                        confirm_top_k=top_k, confirm_rounds=rounds)
    c = _console()
    summary, front = join_study(study, storage or h.optuna_url, h, opts, RichReporter(c)).reconfirm()
    if summary is None:
        c.print(f"study {study}: no feasible trial to re-measure")
        raise typer.Exit(1)
    c.print(pareto_table(front, title=f"Pareto front of {study} ({len(front)} deployments)"))


def _load_study(name: str, storage: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"--study {name!r}: no such study in {storage}; studies: {', '.join(names) or 'none'}") from None


@app.command()
def ui(
    port: int = typer.Option(5000, "--port"),
    host: str = typer.Option("127.0.0.1", "--host", help="bind address (127.0.0.1 keeps it local)"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri"),
    home: Optional[Path] = HomeOpt,
    workers: int = typer.Option(1, "--workers", min=1, help="server processes (MLflow's default of 4 only slows the start of a local UI)"),
):
    """Start the MLflow UI on the planner's tracking store; prints the runs view of each study."""
    import os
    import subprocess

    from planner.paths import Home

    h = Home.resolve(home)
    uri = tracking_uri or h.tracking_uri
    if tracking_uri is None and not (h.root / "mlflow.db").is_file():
        raise ConfigError(f"no MLflow store at {h.root / 'mlflow.db'}: run `planner optimize` first, or pass --home/--tracking-uri")
    typer.echo(f"MLflow UI on http://{host}:{port}  (store: {uri}; Ctrl-C to stop)")
    from planner.record.mlflow import WORKFLOW_PARAM, study_views

    for exp_name, route in study_views(uri):  # the runs view of each study (the UI alone opens on GenAI traces)
        typer.echo(f"  {exp_name}: http://{host}:{port}/{route}")
    typer.echo(f"  registered models: http://{host}:{port}/#/models?{WORKFLOW_PARAM}")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", str(workers)]
    if tracking_uri is None:
        cmd += ["--default-artifact-root", h.artifacts.as_uri()]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    raise typer.Exit(serve_until_stopped(cmd, env))


def serve_until_stopped(cmd: list[str], env: dict[str, str], grace_s: float = 10.0) -> int:
    """Run a server (``mlflow ui`` and the uvicorn/gunicorn workers it starts) in its own process group and stop
    that whole group when this process is stopped by any signal (SIGTERM from a process manager, SIGHUP, Ctrl-C),
    so no server is left holding the port.  Returns the server's exit code (128 + signal when stopped)."""
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    got: list[int] = []

    def stop(signum, frame):
        got.append(signum)
        raise KeyboardInterrupt

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)}
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 128 + (got[0] if got else signal.SIGINT)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _stop_group(proc, grace_s)


def _stop_group(proc, grace_s: float) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after ``grace_s``."""
    import os
    import signal
    import subprocess
    import time

    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            try:  # the server is gone; are its workers?
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@app.command()
def dashboard(
    port: int = typer.Option(8080, "--port"),
    host: str = typer.Option("127.0.0.1", "--host"),
    storage: Optional[str] = typer.Option(None, "--storage"),
    home: Optional[Path] = HomeOpt,
):
    """Start optuna-dashboard on the planner's Optuna storage (pip install 'planner[dashboard]')."""
    import importlib.util
    import subprocess

    from planner.paths import Home

    if importlib.util.find_spec("optuna_dashboard") is None:
        raise ConfigError("optuna-dashboard is not installed: pip install 'planner[dashboard]'")
    url = storage or Home.resolve(home).optuna_url
    raise typer.Exit(subprocess.call([sys.executable, "-m", "optuna_dashboard", url, "--host", host, "--port", str(port)]))


from planner.cli_handoff import register as _register_handoff  # noqa: E402
_register_handoff(app)


def main() -> None:
    try:
        app()
    except ConfigError as e:
        for line in e.errors:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except PlannerError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
