"""The docs tell the truth about the CLI, the code and each other.

* Every `planner …` command shown in README.md and docs/*.md (fenced code blocks and inline code) must name a
  subcommand of the Typer app, and every flag it shows must be an option of that subcommand.  A lone `--flag`
  in inline code counts as a flag of the last command shown in its paragraph (of some command, when none is):
  in these docs a bare flag is a planner flag, so show a script's flags together with the script.
* Every relative link must point to an existing file, and a `#fragment` into a Markdown file to a heading.
* docs/backends.md's backend and scheme tables match the backend classes and the scheme table in code, and
  docs/llm.md's runtimes table the decoder schemes the backends declare.
* README's Layout names only paths that exist, and every module of planner/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE = re.compile(r"(`+)(.+?)\1")
# `planner` as a command word: not part of `.planner`, `planner.cli`, `planner/…`, `planner-<model>`, `planner[tvm]`
COMMAND = re.compile(r"(?<![\w.\-/\[])(?:\S*/)?planner[ \t]+(?=\S)")
FLAG = re.compile(r"(?<![\w\-])(--?[A-Za-z][\w\-]*)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@dataclass(frozen=True)
class Shown:
    """One `planner …` command as the docs show it."""

    file: str
    line: int
    text: str  # from the word after `planner` to the end of the command
    any_command: bool = False  # a lone `--flag` in prose with no command before it: some command must have it


def _command_texts(code: str) -> list[str]:
    """The `planner …` commands in one line of code: each runs to the next one, the line's end, a shell comment or `&&`/`;`."""
    out = []
    starts = list(COMMAND.finditer(code))
    for m, nxt in zip(starts, starts[1:] + [None]):
        rest = code[m.end():nxt.start() if nxt else None]  # two commands side by side end at the second
        rest = re.split(r"\s#|&&|\|\||;", rest)[0]
        out.append(rest.strip())
    return out


def shown_commands(path: Path) -> list[Shown]:
    """Every `planner …` command in a Markdown file: fenced blocks (with `\\` and indented continuations) and inline code.

    A lone flag in inline code (`--trials N`) belongs to the last `planner …` command shown before it in the same
    paragraph or table row; with none, it must be an option of some command.
    """
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    lines = path.read_text().splitlines()
    out: list[Shown] = []
    in_fence = False
    pending: tuple[int, str] | None = None  # a fenced command that may continue on the next line
    context: str | None = None  # the last command shown in this paragraph

    def flush():
        nonlocal pending
        if pending is not None:
            out.extend(Shown(name, pending[0], t) for t in _command_texts(pending[1]))
            pending = None

    for no, line in enumerate(lines, 1):
        if FENCE.match(line):
            flush()
            in_fence = not in_fence
            continue
        if in_fence:
            if pending is not None and (pending[1].endswith("\\") or re.match(r"^\s+[\[\-]", line)):
                pending = (pending[0], pending[1].rstrip("\\") + " " + line.strip())
                continue
            flush()
            if COMMAND.search(line):
                pending = (no, line)
            continue
        if not line.strip() or line.lstrip().startswith(("|", "#")):
            context = None  # a new paragraph, table row or heading
        for m in INLINE.finditer(line):
            code = m.group(2).replace("\\|", "|")  # `a\|b` in a table cell is `a|b`
            texts = _command_texts(code)
            out.extend(Shown(name, no, t) for t in texts)
            if texts:
                context = re.split(r"\s(?=-)", texts[-1])[0]  # its command words, not its flags
            elif code.strip().startswith("--"):
                out.append(Shown(name, no, f"{context} {code.strip()}" if context else code.strip(), context is None))
    flush()
    return out


def _is_group(cmd) -> bool:
    return hasattr(cmd, "commands")


def _options(cmd) -> set[str]:
    """Every option string of a command, `--help` included (duck-typed: Typer may bring its own click)."""
    ctx = cmd.context_class(cmd, info_name=cmd.name)
    return {o for p in cmd.get_params(ctx) if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}


def _leaves(cmd) -> list:
    return [c for sub in cmd.commands.values() for c in _leaves(sub)] if _is_group(cmd) else [cmd]


def check_shown(root, shown: Shown) -> list[str]:
    if not shown.any_command:
        return check_command(root, shown.text)
    known = set().union(*(_options(c) for c in _leaves(root)))
    return [f"`{shown.text}`: no planner command has option {f}" for f in FLAG.findall(shown.text) if f not in known]


def check_command(root, text: str) -> list[str]:
    """Problems with one shown command (`text` is what follows `planner `); empty when the CLI has it all."""
    tokens = text.split()
    cmds: list[tuple[str, object]] = [("planner", root)]
    i = 0
    while i < len(tokens) and _is_group(cmds[0][1]):
        word = tokens[i].strip("`[]()")
        if word.startswith("-") or not re.fullmatch(r"[a-z][\w\-]*(\|[a-z][\w\-]*)*", word):
            break  # a flag or an argument: the command is the group itself
        nxt = []
        for path, group in cmds:
            for alt in word.split("|"):
                sub = group.commands.get(alt)
                if sub is None:
                    return [f"`planner {text}`: no command {alt!r} in `{path}` "
                            f"(it has: {', '.join(sorted(group.commands))})"]
                nxt.append((f"{path} {alt}", sub))
        cmds = nxt
        i += 1
    rest = " ".join(tokens[i:])
    problems = []
    for path, cmd in cmds:
        known = _options(cmd)
        for flag in dict.fromkeys(FLAG.findall(rest)):
            if flag not in known:
                problems.append(f"`planner {text}`: `{path}` has no option {flag} (it has: {', '.join(sorted(known))})")
    return problems


@pytest.fixture(scope="module")
def root():
    from planner.cli import app

    cmd = typer.main.get_command(app)
    assert _is_group(cmd) and "optimize" in cmd.commands
    return cmd


def test_docs_exist():
    assert (ROOT / "README.md").is_file()
    assert len(DOCS) > 1, "docs/*.md missing"


def test_docs_show_commands():
    """The docs do show commands (a parser that found none would pass everything)."""
    shown = [s for p in DOCS for s in shown_commands(p)]
    words = {s.text.split()[0] for s in shown if s.text}
    assert {"optimize", "export", "verify", "pareto", "worker", "confirm"} <= words, words


def test_every_shown_command_and_flag_exists(root):
    problems = [f"{s.file}:{s.line}: {p}" for path in DOCS for s in shown_commands(path) for p in check_shown(root, s)]
    assert not problems, "\n".join(problems)


def test_checker_catches_made_up_flags_and_commands(root, tmp_path):
    assert check_command(root, "optimize --model resnet18 --target targets/cpu.yaml [--trials N]") == []
    assert check_command(root, "targets list|show|validate") == []
    assert check_command(root, "export models:/x@knee --out d [--format bundle|triton] [--force]") == []
    bad_flag = check_command(root, "optimize --model resnet18 --turbo-mode")
    assert len(bad_flag) == 1 and "--turbo-mode" in bad_flag[0] and "`planner optimize`" in bad_flag[0]
    assert check_command(root, "pareto --study s --trials 3")  # a flag of another command
    assert check_command(root, "frobnicate --study s")[0].startswith("`planner frobnicate --study s`: no command 'frobnicate'")
    assert check_command(root, "targets list|explode")
    assert check_command(root, "spaces validate -z x.yaml")  # short flags too

    doc = tmp_path / "fake.md"
    doc.write_text("Run `planner pareto --study s --bogus` now, with `--policy knee`.\n\n```bash\n"
                   "planner optimize --model m \\\n    --nope 3   # comment --not-a-flag\n"
                   "planner verify DIR\n                 [--also-bogus]\nplanner models    planner probe --out x\n```\n"
                   "| `planner targets list\\|shout` |\n| `--seed` |\n\n`planner export` takes `--trials` and `--force`;\n\n"
                   "`--no-such-flag` alone, `--retries N` alone\n")
    shown = shown_commands(doc)
    assert [(s.line, s.text.split()[0]) for s in shown] == [
        (1, "pareto"), (1, "pareto"), (4, "optimize"), (6, "verify"), (8, "models"), (8, "probe"),
        (10, "targets"), (11, "--seed"), (13, "export"), (13, "export"), (13, "export"), (15, "--no-such-flag"),
        (15, "--retries")]
    problems = [p for s in shown for p in check_shown(root, s)]
    bad = ("--bogus", "--nope", "--also-bogus", "'shout'", "has no option --trials", "--no-such-flag")
    assert len(problems) == len(bad) and all(any(f in p for p in problems) for f in bad), problems


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    out, in_fence = set(), False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            out.add(_slug(m.group(1)))
    return out


def link_problems(path: Path) -> list[str]:
    problems, in_fence = [], False
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for target in LINK.findall(INLINE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.\-]*:", target):  # http:, https:, mailto:
                continue
            file, _, frag = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                problems.append(f"{path.name}:{no}: link {target!r}: no file {dest}")
            elif frag and dest.suffix == ".md" and frag not in _anchors(dest):
                problems.append(f"{path.name}:{no}: link {target!r}: no heading #{frag} in {dest.name}")
    return problems


def test_relative_links_resolve():
    problems = [p for path in DOCS for p in link_problems(path)]
    assert not problems, "\n".join(problems)


def test_link_checker_catches_a_broken_link(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](there.md) [ok](there.md#a-heading) [web](https://example.com)\n"
                   "[gone](missing.md) [bad anchor](there.md#nope)\n```\n[in code](ignored.md)\n```\n")
    problems = link_problems(doc)
    assert len(problems) == 2 and "missing.md" in problems[0] and "#nope" in problems[1]


def test_readme_keeps_the_ci_test_command():
    """`.ci/run` runs `make test`, 'the README's test command': the README must still say so."""
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


# --------------------------------------------------------------------------- facts the docs restate


def _table(path: Path, heading: str) -> list[list[str]]:
    """The first Markdown table under ``## heading``: its body rows, cells stripped."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#") == f" {heading}" and line.startswith("##"))
    rows, seen = [], False
    for line in lines[start + 1:]:
        if line.startswith("#") and not rows:
            continue
        if line.startswith("## "):
            break
        if line.startswith("|"):
            seen = True
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif seen:
            break
    return rows[1:]  # without the header


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_backend_options_table_is_the_declaration():
    """docs/backends.md's options table is what each backend's `Options` model declares: every option, its values,
    its default and its description, in order."""
    import planner.backends.registry as registry
    from planner.backends.base import options_table

    shown = [tuple(r) for r in _table(ROOT / "docs" / "backends.md", "Backend options")]
    declared = [(f"`{n}`", f"`{k}`", v, d, w) for n in registry.REGISTRY for k, v, d, w in options_table(registry.get(n))]
    assert shown == declared


def test_backend_table_matches_the_classes():
    """docs/backends.md's table states each backend's devices, input, options and schemes: as its class declares."""
    import planner.backends.registry as registry
    from planner.schemes import SCHEMES

    rows = {_names(r[0])[0]: r for r in _table(ROOT / "docs" / "backends.md", "The backends")}
    assert sorted(rows) == sorted(registry.REGISTRY), "one row per registered backend"
    for name, (_, devices, inp, options, schemes) in rows.items():
        cls = registry.get(name)
        assert [d.strip() for d in devices.split(",")] == list(cls.devices), name
        assert ("ONNX" in inp and "nn.Module" not in inp) == (cls.input_format == "onnx"), name
        assert ("ONNX" in inp) == (cls.input_format == "onnx" or cls.accepts_onnx), name
        assert set(_names(options)) == set(cls.options), name
        # "`a`, `b`; `c` only with …": a, b are what it runs now; c depends on the installed version
        always, _, depends = schemes.partition(";")
        shown, optional = set(_names(always)), set(_names(depends))
        declared = set(cls.quant_schemes) - {"none"}
        assert shown <= declared and declared - optional <= shown, (name, sorted(shown), sorted(declared))
        assert (shown | optional) <= set(SCHEMES), name
        limited = {s for s, devs in cls.scheme_devices.items() if tuple(devs) != SCHEMES[s].devices}
        assert {s for s in shown if f"`{s}` (" in always} == limited, (name, "per-device limits")


def test_decoder_runtime_table_matches_the_classes():
    """docs/llm.md's runtimes table: one row per backend with a decoder runtime, listing the schemes it implements
    (`Backend.decoder_schemes`); a scheme the backend runs but its decoder does not is never shown."""
    import planner.backends.registry as registry
    from planner.llm.runtimes import decoder_backends
    from planner.schemes import SCHEMES

    rows = {_names(r[0])[0]: r for r in _table(ROOT / "docs" / "llm.md", "Runtimes")}
    assert sorted(rows) == sorted(decoder_backends()), "one row per backend with a decoder runtime"
    for name, (_, _, schemes) in rows.items():
        cls = registry.get(name)
        shown = {s for s in _names(schemes) if s in SCHEMES}
        declared = set(cls.decoder_schemes) - {"none"}
        assert declared <= shown, (name, sorted(declared - shown))
        # shown but not declared: only a scheme this install lacks altogether (openvino's NNCF schemes without nncf)
        assert not (shown - declared) & set(cls.quant_schemes), (name, sorted(shown - declared))


def test_scheme_table_matches_the_scheme_table_in_code():
    from planner.schemes import SCHEMES

    rows = {_names(r[0])[0]: r for r in _table(ROOT / "docs" / "backends.md", "Quantization schemes")}
    assert sorted(rows) == sorted(SCHEMES)
    for name, (_, precision, _, options) in rows.items():
        assert precision == SCHEMES[name].precision, name
        assert set(_names(options)) == set(SCHEMES[name].options), name


def _layout_paths() -> list[str]:
    """Every file and folder the README's Layout block names, relative to the repository root."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    out, top = [], ""
    for line in block.splitlines()[1:]:
        words = line.split()
        if not words:
            continue
        indented = line.startswith(" ")
        if not indented and words[0].endswith("/"):
            top = words[0]
        base = top if indented else ""
        if indented and re.fullmatch(r"\w+/", words[0]):
            base = top + words[0]
            out.append(base)
            words = words[1:]
        out += [base + w for w in words if re.fullmatch(r"[\w.]+\.py|\w+/", w)]
    return out


def test_readme_layout_is_true_and_complete():
    listed = _layout_paths()
    missing = [p for p in listed if not (ROOT / p).exists()]
    assert not missing, f"README Layout names paths that do not exist: {missing}"
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "planner").rglob("*.py")
                     if p.name != "__init__.py" and "__pycache__" not in p.parts)
    unlisted = [m for m in modules if m not in listed]
    assert not unlisted, f"README Layout omits: {unlisted}"
