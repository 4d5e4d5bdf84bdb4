"""MLflow Model Registry: every Pareto-optimal deployment is a version of ``planner-<model>-<target>``.

After a study the orchestrator calls `publish_study`: each run on the front is
registered once (a resumed study reuses the version already registered for a
run id), its ``engine/`` artifact made an MLflow Model first (`planner.select.mlmodel`, once per run),
the version carries the deployment's facts as tags, and the aliases
``fastest``, ``most-accurate`` and ``knee`` point at the policies' picks.
`resolve` turns ``RUN_ID``, ``runs:/RUN_ID/...``, ``models:/NAME@ALIAS`` or
``models:/NAME/VERSION`` into a run id for export/verify.

MLflow facts this relies on (mlflow 3.x, sqlite store):
  * alias names may hold letters, digits, ``_`` and ``-`` (so ``most-accurate`` is valid);
    ``latest`` and ``v<digits>`` are reserved;
  * model names must not contain ``/`` or ``:``;
  * ``search_model_versions`` returns versions without their aliases: read aliases from
    ``get_registered_model(name).aliases`` (a dict alias -> version);
  * tag values must be strings.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

from planner.errors import ConfigError

ALIAS_POLICIES = ("fastest", "most-accurate", "knee")  # alias name == policy name (hyphens are valid aliases)
_RUN_ID = re.compile(r"^[A-Za-z0-9][\w-]{0,255}$")


def registered_model_name(model: str, target: str) -> str:
    """``planner-<model>-<target>`` with every character MLflow or a URI would trip on replaced by ``_``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"planner-{model}-{target}").strip(".")
    return name[:200] or "planner-model"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def version_tags(point, study_name: str) -> dict[str, str]:
    """What a serving team wants to see on a model version without opening the run."""
    c, m = point.cfg, point.metrics
    tags: dict[str, Any] = {
        "backend": c.backend if c else None,
        "precision": c.precision if c else None,
        "quant_scheme": c.quant.scheme if c else None,
        "prune_method": c.prune.method if c else None,
        "prune_ratio": c.prune.ratio if c else None,
        "batch_size": c.batch_size if c else None,
        "latency_ms": m.get("latency_ms"),
        "p50_ms": m.get("latency_p50_ms"),
        "p99_ms": m.get("latency_p99_ms"),
        "throughput": m.get("throughput"),
        "quality_loss": m.get("quality_loss"),
        "study": study_name,
        "trial": point.number,
        "config_key": c.key() if c else None,
        "label": point.label,
        "pareto": "true",
        # re-measured in interleaved rounds after the search (planner.select.confirm): latency_ms above is that
        "confirmed_rounds": int(m["confirmed_rounds"]) if m.get("confirmed_rounds") else None,
        "study_latency_ms": m.get("study_latency_ms"),
    }
    if "ttft_ms" in m and "tpot_ms" in m:  # a decoder: TTFT/TPOT at the workload's percentile and the response
        from planner.select.pareto import response_ms

        tags.update(ttft_ms=m["ttft_ms"], tpot_ms=m["tpot_ms"], response_ms=response_ms(point),
                    tokens_per_s=m.get("tokens_per_s"))
    for k, v in sorted((c.options() if c else {}).items()):
        tags[f"option.{k}"] = v
    return {k: _fmt(v)[:5000] for k, v in tags.items() if v is not None}


def version_description(point, study_name: str, target_name: str) -> str:
    """One paragraph a person choosing a version reads in the registry: deployment, latency, quality, target."""
    m = point.metrics
    lat = m.get("latency_ms")
    parts = [f"{point.label or point.backend}, batch {point.batch_size or '?'}"]
    if isinstance(lat, (int, float)):
        tail = f"; p99 {m['latency_p99_ms']:.4g} ms" if isinstance(m.get("latency_p99_ms"), (int, float)) else ""
        conf = f", confirmed over {int(m['confirmed_rounds'])} rounds" if m.get("confirmed_rounds") else ""
        parts.append(f"latency {lat:.4g} ms per batch{conf}{tail}")
    if isinstance(m.get("throughput"), (int, float)):
        parts.append(f"{m['throughput']:.4g} samples/s")
    q = m.get("quality_loss")
    if isinstance(q, (int, float)):
        floor = getattr(point, "noise_floor", 0.0)
        parts.append(f"quality loss {q:.3g} vs fp32" + (f" (below the noise floor {floor:g}: exact)" if floor and q < floor else ""))
    parts.append(f"target {target_name}")
    return f"{' — '.join(parts)}. Trial {point.number} of study {study_name}."


def _not_found(e: Exception) -> bool:
    return getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def ensure_registered_model(client, name: str, tags: dict[str, str] | None = None, description: str | None = None):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if not _not_found(e):
            raise
    try:
        return client.create_registered_model(name, tags=tags, description=description)
    except MlflowException as e:  # another worker created it meanwhile
        if getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_registered_model(name)


def versions_of_run(client, name: str, run_id: str) -> list:
    vs = client.search_model_versions(f"name = '{_q(name)}' and run_id = '{_q(run_id)}'")
    return sorted(vs, key=lambda v: int(v.version))


def _q(s: str) -> str:
    return s.replace("'", "\\'")


def register_front(client, front, *, model_name: str, target_name: str, study_name: str,
                   policies=None) -> dict[str, Any]:
    """Register each Pareto point's run once and point the policy aliases at their picks.

    Returns ``{"name", "versions": {run_id: version}, "aliases": {alias: version}, "created": [versions]}``.
    """
    from planner.select.pareto import Fastest, Knee, MostAccurate

    name = registered_model_name(model_name, target_name)
    if not any(p.run_id for p in front):
        return {"name": name, "versions": {}, "aliases": {}, "created": []}
    ensure_registered_model(client, name, tags={"planner.model": model_name, "planner.target": target_name},
                            description=f"Pareto-optimal deployments of {model_name} on {target_name}, registered by planner")
    versions: dict[str, str] = {}
    created: list[str] = []
    for p in front:
        if not p.run_id:
            continue
        existing = versions_of_run(client, name, p.run_id)
        _ensure_model(client, p, name)
        tags = version_tags(p, study_name)
        description = version_description(p, study_name, target_name)
        if existing:
            mv = existing[0]
            if (mv.description or "") != description:  # re-measured by a confirmation since
                client.update_model_version(name, mv.version, description=description)
        else:
            mv = client.create_model_version(name, source=f"runs:/{p.run_id}/engine", run_id=p.run_id, tags=tags,
                                             description=description)
            again = versions_of_run(client, name, p.run_id)
            if again and again[0].version != mv.version:  # a concurrent finisher registered it first: keep theirs
                client.delete_model_version(name, mv.version)
                mv = again[0]
            else:
                created.append(str(mv.version))
        versions[p.run_id] = str(mv.version)
        have = dict(getattr(mv, "tags", {}) or {})
        for k, v in tags.items():
            if have.get(k) != v:
                client.set_model_version_tag(name, mv.version, k, v)
    # versions of this study that left the front (a resumed study found better ones)
    on_front = set(versions.values())
    for v in client.search_model_versions(f"name = '{_q(name)}'"):
        if str(v.version) not in on_front and (v.tags or {}).get("study") == study_name and (v.tags or {}).get("pareto") != "false":
            client.set_model_version_tag(name, v.version, "pareto", "false")
    aliases: dict[str, str] = {}
    picks: dict[str, Any] = {}
    for pol in policies or (Fastest(), MostAccurate(), Knee()):
        pick = pol.select([p for p in front if p.run_id in versions])
        if pick is None:
            continue
        alias = alias_name(pol.name)
        client.set_registered_model_alias(name, alias, versions[pick.run_id])
        aliases[alias] = versions[pick.run_id]
        picks[alias] = pick
    if picks:  # what each alias points at, on the model's page (version descriptions are cut short there)
        lines = [f"Pareto-optimal deployments of {model_name} on {target_name}, registered by planner. "
                 f"Aliases (study {study_name}):"]
        lines += [f"* `@{a}` → version {aliases[a]}: {version_description(p, study_name, target_name)}" for a, p in picks.items()]
        client.update_registered_model(name, description="\n".join(lines))
    return {"name": name, "versions": versions, "aliases": aliases, "created": created}


def _ensure_model(client, point, name: str) -> None:
    """Make the run's ``engine/`` an MLflow Model (once per run; `planner.select.mlmodel`); a failure is a warning:
    the version is still registered, loadable by `planner export`."""
    from planner.select.mlmodel import ensure_mlflow_model

    if "ttft_ms" in point.metrics:  # an LLM decoder: served by generation, not one forward pass per request
        return
    try:
        ensure_mlflow_model(client, point.run_id, metrics=point.metrics, registered_as=name)
    except Exception as e:
        print(f"warning: could not log trial {point.number} (run {point.run_id}) as an MLflow Model: "
              f"{type(e).__name__}: {str(e).strip()[:300]}", file=sys.stderr)


def alias_name(policy_name: str) -> str:
    """A valid MLflow alias for a policy name (letters, digits, ``_``, ``-``)."""
    return re.sub(r"[^\w-]+", "_", policy_name)


def publish_study(study, rec, front, target, model_name: str) -> dict[str, Any]:
    """Called by the orchestrator after `mark_pareto`: register the front and log the plots.

    Each part is guarded: a failure is a warning on stderr, never a failed study.
    """
    out: dict[str, Any] = {}
    try:
        out["registry"] = register_front(rec.client, front, model_name=model_name, target_name=target.name,
                                         study_name=study.study_name)
        if rec.parent_run_id:
            rec.client.set_tag(rec.parent_run_id, "planner.registered_model", out["registry"]["name"])
    except Exception as e:
        print(f"warning: could not register the Pareto front in the MLflow Model Registry: {type(e).__name__}: {e}",
              file=sys.stderr)
    try:
        from planner.select.plots import log_study_plots

        out["plots"] = log_study_plots(rec, study, target)
    except Exception as e:
        print(f"warning: could not draw the study plots: {type(e).__name__}: {e}", file=sys.stderr)
    try:
        from planner.select.pareto import study_summary

        summary = study_summary(study, front)
        out["summary"] = summary["metrics"]
        if rec.parent_run_id:
            out["view"] = rec.save_view(study.study_name)
            rec.log_summary(summary["metrics"], study_note(study, target, front, summary, out.get("registry"),
                                                          out.get("plots") or [], rec.parent_run_id, out["view"]))
    except Exception as e:
        print(f"warning: could not write the study summary in MLflow: {type(e).__name__}: {e}", file=sys.stderr)
    return out


def _ms(v) -> str:
    return f"{v:.4g} ms" if isinstance(v, (int, float)) else "-"


def closest_served_lines(conf: dict[str, Any], study) -> list[str]:
    """With traffic that no trial served within its SLO: the re-measured closest trials (`confirm.closest_served`),
    each with its served percentile and sustained rate, and what to change; [] otherwise."""
    if not conf.get("closest") or not conf.get("trials"):
        return []
    pct, slo = conf.get("percentile", "p99"), conf.get("slo_ms")
    out = ["", f"Closest under {conf.get('served')}, re-measured ({conf.get('rounds')} rounds; SLO {pct} ≤ {_ms(slo)}):", ""]
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for n, c in sorted(conf["trials"].items(), key=lambda kv: kv[1]["latency_ms"]):
        t = trials.get(int(n))
        label = t.user_attrs.get("label", "") if t is not None else ""
        rate = ((t.user_attrs.get("metrics") or {}).get("sustained_rate") if t is not None else None)
        kept = "" if c.get("served_rate_kept", True) else ", the rate not kept"
        within = ("" if not isinstance(rate, (int, float)) else
                  f"; within the SLO up to {rate:.4g} req/s" if rate > 0 else "; within the SLO at no measured rate")
        out.append(f"- #{n} {label}: served {pct} {_ms(c['latency_ms'])}{kept}{within}")
    out += ["", "Lower the traffic's rate to what the closest sustains, raise its `slo_ms`, or widen the space "
                "(more instances, batching, cheaper precisions)."]
    return out


def study_note(study, target, front, summary: dict[str, Any], registry: dict[str, Any] | None, plots: list[str],
               parent_run_id: str, view: str | None = None) -> str:
    """The parent run's Markdown description (MLflow run note): the outcome, the front, the picks and how to
    export each."""
    from planner.select.pareto import Fastest, Knee, MostAccurate, markdown_table

    m, best = summary["metrics"], summary["best"]
    lines = [f"## Study `{study.study_name}`: {(study.user_attrs.get('model_spec') or {}).get('name', study.user_attrs.get('model', '?'))}"
             f" on {target.name}", ""]
    if best is None:
        lines.append("**No feasible deployment**: every measured trial broke a constraint or failed.")
        lines += closest_served_lines(study.user_attrs.get("confirmation") or {}, study)
    else:
        vs = (f", **{m['best_latency_vs_fp32']:.2f}×** the latency of eager torch fp32 ({_ms(m['fp32_latency_ms'])})"
              if "best_latency_vs_fp32" in m else "")
        lines.append(f"**Fastest feasible: #{best.number} {best.label} (batch {best.batch_size}): "
                     f"{_ms(best.latency_ms)}**{vs}, quality loss {best.quality_loss:.3g}.")
    lines += ["", f"Trials: {int(m['trials_measured'])} measured ({int(m['trials_infeasible'])} infeasible), "
                  f"{int(m['trials_failed'])} failed, {int(m['trials_duplicate'])} duplicates. "
                  f"Pareto front: {len(front)} deployments"
              + (f", hypervolume {m['hypervolume']:.3f} (share of latency ≤ {m['hypervolume_ref_latency_ms']:g} ms × "
                 f"quality loss ≤ {m['hypervolume_ref_quality_loss']:g} dominated)" if "hypervolume" in m else "")
              + f". Quality losses below {m['quality_noise_floor']:g} are numerical noise: ties, the faster wins.", ""]
    from planner.outputs import judged_on

    if (judged := judged_on(study.user_attrs.get("model_info") or {})) is not None:
        lines[-1:-1] = [judged[0].upper() + judged[1:] + "."]
    if front:
        lines += ["### Pareto front", "", markdown_table(front), ""]
        reg = registry or {}
        name, aliases = reg.get("name"), reg.get("aliases") or {}
        lines += ["### Picks", "", "| policy | trial | deployment | latency | quality loss | export |", "|---|---:|---|---:|---:|---|"]
        for pol in (Fastest(), MostAccurate(), Knee()):
            p = pol.select(front)
            if p is None:
                continue
            alias = alias_name(pol.name)
            ref = f"models:/{name}@{alias}" if name and alias in aliases else None
            cmd = (f"planner export {ref} --out {alias}/" if ref
                   else f"planner export --study {study.study_name} --trial {p.number} --out {alias}/")
            lines.append(f"| {pol.name} | #{p.number} | {p.label} b={p.batch_size} | {_ms(p.latency_ms)} | "
                         f"{p.quality_loss:.3g} | `{cmd}` |")
        lines += ["", "Add `--format triton` for a Triton model repository; `planner verify DIR` checks an export."]
        if name and "knee" in aliases:  # each registered version is an MLflow Model (planner.select.mlmodel)
            lines += ["", f"Or serve a registered version with MLflow itself: `mlflow models serve -m models:/{name}@knee "
                          "--env-manager local` (or `mlflow.pyfunc.load_model(...)`)."]
    lines += ["", "### In this UI", "",
              "* Pareto members: search runs with `tags.planner.pareto = \"true\"`; this study's runs: "
              f"`tags.planner.study = '{study.study_name}'`" + (f" (saved view: `{view}`)" if view else "") + ".",
              "* Chart view: add a scatter chart of `latency_ms` against `quality_loss` (every trial logs both)."]
    if "plots/pareto.png" in plots:
        lines += ["", "![Pareto front: latency vs quality loss](get-artifact?path=plots%2Fpareto.png&run_uuid="
                  f"{parent_run_id})", "", "Plots: artifacts `plots/pareto.png`, `plots/pareto.html` (interactive), "
                  "`plots/parallel.png`."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- resolve


@dataclass(frozen=True)
class Resolved:
    run_id: str
    uri: str  # what the user gave
    model: str | None = None
    version: str | None = None
    alias: str | None = None


def _registered_listing(client, limit: int = 20) -> str:
    try:
        models = client.search_registered_models(max_results=limit)
    except Exception:
        return "none"
    parts = []
    for m in models:
        al = dict(getattr(m, "aliases", {}) or {})
        if al:
            parts.extend(f"models:/{m.name}@{a}" for a in sorted(al))
        else:
            parts.append(f"models:/{m.name}")
    return ", ".join(parts) or "none"


def resolve(ref: str, client) -> Resolved:
    """``RUN_ID | runs:/RUN_ID[/path] | models:/NAME@ALIAS | models:/NAME/VERSION`` -> the trial's run id.

    Unknown names raise `ConfigError` with one line that lists what exists.
    """
    from mlflow.exceptions import MlflowException

    ref = ref.strip()
    if ref.startswith("models:/"):
        body = ref[len("models:/"):]
        if "@" in body:
            name, _, alias = body.partition("@")
            version = None
        else:
            name, _, version = body.rstrip("/").partition("/")
            alias = None
        if not name or (alias is None and not version) or (alias is not None and not alias):
            raise ConfigError(f"{ref}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        try:
            rm = client.get_registered_model(name)
        except MlflowException as e:
            if not _not_found(e):
                raise
            raise ConfigError(f"{ref}: no registered model {name!r}; registered: {_registered_listing(client)}") from None
        aliases = dict(getattr(rm, "aliases", {}) or {})
        if alias is not None:
            if alias not in aliases:
                have = ", ".join(f"{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
                raise ConfigError(f"{ref}: model {name!r} has no alias {alias!r}; aliases: {have}")
            version = str(aliases[alias])
        versions = sorted(client.search_model_versions(f"name = '{_q(name)}'"), key=lambda v: int(v.version))
        if version == "latest":
            if not versions:
                raise ConfigError(f"{ref}: model {name!r} has no versions")
            version = str(versions[-1].version)
        mv = next((v for v in versions if str(v.version) == str(version)), None)
        if mv is None:
            raise ConfigError(f"{ref}: model {name!r} has no version {version!r}; versions: "
                              f"{', '.join(str(v.version) for v in versions) or 'none'}")
        if not mv.run_id:
            raise ConfigError(f"{ref}: version {version} of {name!r} is not linked to a run (source {mv.source})")
        return Resolved(mv.run_id, ref, name, str(version), alias)
    run_id = ref
    if ref.startswith("runs:/"):
        run_id = ref[len("runs:/"):].split("/", 1)[0]
    if not _RUN_ID.match(run_id):
        raise ConfigError(f"{ref!r}: not a run id nor a models:/NAME@ALIAS or models:/NAME/VERSION reference; "
                          f"registered: {_registered_listing(client)}")
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if not _not_found(e):
            raise
        raise ConfigError(f"run {run_id!r}: not found in the tracking store; registered: {_registered_listing(client)} "
                          "(trial run ids: `planner pareto --study NAME`)") from None
    if run.data.tags.get("planner.kind") == "study":
        raise ConfigError(f"run {run_id!r} is the study's parent run; give a trial run (`planner pareto --study "
                          f"{run.data.tags.get('planner.study', 'NAME')}`) or a registered model "
                          f"({_registered_listing(client)})")
    return Resolved(run_id, ref)
