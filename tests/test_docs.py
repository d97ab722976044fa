"""The docs' commands are the CLI's: every `firecut ...` line in a code block of README.md,
BENCHMARKS.md or docs/ names a command that exists and only options it has (a renamed or
removed flag must not survive in a command a user will paste)."""

import functools
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_commands(text: str) -> list[str]:
    """`firecut ...` lines of fenced or indented code blocks, continuation lines joined."""
    out, fenced, pending = [], False, ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ") or pending):
            continue
        s = f"{pending} {s}" if pending else s
        pending = s[:-1] if s.endswith("\\") else ""
        if not pending and s.startswith("firecut "):
            out.append(s)
    return out


@functools.cache
def cli():
    """The CLI's command tree, built once for every line checked."""
    import typer

    from firecut.cli import app

    return typer.main.get_command(app)


def problem(line: str) -> str | None:
    """None where `line` parses as a firecut command, else what is wrong with it."""
    tokens = shlex.split(line.split(" #")[0])[1:]
    cmd = cli()
    while hasattr(cmd, "commands"):
        name = tokens.pop(0) if tokens else "(none)"
        if name not in cmd.commands:
            return f"unknown command {name}"
        cmd = cmd.commands[name]
    known = {o for p in cmd.params for o in p.opts + p.secondary_opts} | {"--help"}
    flags = [t.split("=")[0] for t in tokens if t.startswith("-") and not t[1:2].isdigit()]
    unknown = [f for f in flags if f not in known]
    return f"unknown option(s) {', '.join(unknown)}" if unknown else None


def test_the_checker_finds_what_it_should():
    text = "```bash\nfirecut train --preset cpu \\\n    --no-such-flag 3 --out runs/x\nfirecut trian\n```\n"
    found = doc_commands(text)
    assert found == ["firecut train --preset cpu  --no-such-flag 3 --out runs/x", "firecut trian"]
    assert problem(found[0]) == "unknown option(s) --no-such-flag"
    assert problem(found[1]) == "unknown command trian"
    assert problem("firecut schedules show paper.yaml") is None
    assert problem("firecut train --keep fire2,fire4 --set train.distill=0.5 --distill 0.5") is None
    assert len(doc_commands((ROOT / "README.md").read_text())) >= 5  # the recipes and the quick start


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_documented_command_parses(path):
    lines = doc_commands(path.read_text())
    bad = {line: why for line in lines if (why := problem(line))}
    assert bad == {}
