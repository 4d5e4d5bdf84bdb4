"""`planner export` and `planner verify`: hand a measured deployment to the serving team.

Import-light on purpose (typer only): mlflow, optuna, torch and onnxruntime load inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from planner.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add the top-level `export` and `verify` commands to the planner CLI."""

    @app.command("export")
    def export_cmd(
        ref: Optional[str] = typer.Argument(None, metavar="[RUN_ID | models:/NAME@ALIAS | models:/NAME/VERSION]",
                                            help="the trial to export: MLflow run id or registered model version"),
        out: Path = typer.Option(..., "--out", "-o", help="folder to write (must be empty unless --force)"),
        fmt: str = typer.Option("bundle", "--format", "-f", help="bundle | triton"),
        force: bool = typer.Option(False, "--force", help="replace a non-empty --out folder"),
        name: Optional[str] = typer.Option(None, "--name", help="Triton model name (default: the registered model name)"),
        study: Optional[str] = typer.Option(None, "--study", help="with --trial: export this study's trial instead of REF"),
        trial: Optional[int] = typer.Option(None, "--trial", help="trial number within --study"),
        storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (for --study/--trial)"),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: sqlite in the home folder)"),
        home: Optional[Path] = typer.Option(None, "--home", help="State folder. Default: $PLANNER_HOME or ./.planner"),
    ):
        """Export one measured deployment as a self-checking bundle or a Triton model repository."""
        from planner.select.export import export

        if (study is None) != (trial is None):
            raise ConfigError("--study and --trial go together")
        r = export(ref, out, fmt=fmt, force=force, tracking_uri=tracking_uri, home=home, name=name, study=study,
                   trial=trial, storage=storage)
        typer.echo(f"exported run {r.run_id} ({r.engine_file}, {r.format}) to {r.root}")
        typer.echo(f"  {len(r.files)} files + manifest.json; reference outputs: "
                   f"{'fp32 model' if r.reference == 'fp32' else 'the engine itself'}")
        for n in r.notes:
            typer.echo(f"  note: {n}")
        typer.echo(f"check it: planner verify {out}")

    @app.command("verify")
    def verify_cmd(
        directory: Path = typer.Argument(..., help="folder written by `planner export` (bundle or Triton repository)"),
        no_run: bool = typer.Option(False, "--no-run", help="check checksums only; do not load the engine"),
        max_slowdown: Optional[float] = typer.Option(None, "--max-slowdown", help="fail when re-measured p50 exceeds this multiple of the recorded p50"),
        timeout: float = typer.Option(600.0, "--timeout", help="seconds allowed for loading and running the engine"),
    ):
        """Check an export: sha256 of every file, outputs within tolerance (fresh process), latency vs recorded."""
        from planner.select.verify import verify

        rep = verify(directory, run=not no_run, timeout=timeout, max_slowdown=max_slowdown)
        for line in rep.lines:
            typer.echo(f"ok: {line}")
        for w in rep.warnings:
            typer.echo(f"warning: {w}", err=True)
        for p in rep.problems:
            typer.echo(f"FAIL: {p}", err=True)
        if not rep.ok:
            raise typer.Exit(1)
        typer.echo(f"verified {rep.root}")
