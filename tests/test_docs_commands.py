"""Every ``radfm`` command shown in the README, docs/, bundle READMEs and large_files.yml exists.

For each command line: the subcommand (and the group's command, e.g. ``radfm data convert``)
must exist, every ``--flag`` shown must be a parameter of the function behind it, and
``radfm SUBCOMMAND [COMMAND] --help`` must print help and exit 0.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import re
import shlex
from pathlib import Path

import pytest

from radfm.cli import SUBCOMMANDS, load_subcommand, main

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "bundles").glob("*/docs/README.md"),
     *(ROOT / "bundles").glob("*/large_files.yml"), *(ROOT / "slicer").glob("*/README.md")]
)
_FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
_INLINE = re.compile(r"`((?:radfm|python -m radfm\.demo) [^`]+)`")
GROUPS = ("data", "rate")  # subcommands that are command groups: `radfm data convert ...`


def _command_lines(text: str) -> list[str]:
    lines: list[str] = []
    for block in _FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)  # shell line continuations
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(("radfm ", "python -m radfm.demo")):
                lines.append(line)
    lines += _INLINE.findall(text)
    return lines


def documented_commands() -> list[tuple[str, str]]:
    """``(file, command)`` for every radfm command line in the docs (placeholders like SUBCOMMAND left out)."""
    found = []
    for path in DOC_FILES:
        for line in _command_lines(path.read_text(encoding="utf-8")):
            sub = line.split()[1] if line.startswith("radfm ") else "demo"
            if sub.isupper() or sub.startswith("-"):  # `radfm SUBCOMMAND --help`, `radfm --help`
                continue
            found.append((path.relative_to(ROOT).as_posix(), line))
    return found


def _parse(command: str) -> tuple[str, str | None, list[str]]:
    """(subcommand, group command or None, flags without dashes) of one documented command."""
    command = command.replace("[", " ").replace("]", " ").replace("|", " ").replace("…", "x")
    words = shlex.split(command)
    if words[:3] == ["python", "-m", "radfm.demo"]:
        words = ["radfm", "demo", *words[3:]]
    sub = words[1]
    rest = words[2:]
    method = rest[0] if sub in GROUPS and rest and not rest[0].startswith("-") else None
    flags = [flag.replace("-", "_") for w in rest for flag in re.findall(r"(?:^|/)--([A-Za-z][\w-]*)", w)]
    return sub, method, flags


def _accepts(target, method: str | None) -> tuple[set[str], bool]:
    function = getattr(target, method) if method else target
    signature = inspect.signature(function)
    names = {name for name, p in signature.parameters.items() if p.kind is not p.VAR_KEYWORD}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    return names - {"self"}, takes_any


COMMANDS = documented_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 20  # the scan itself works
    assert {_parse(c)[0] for _, c in COMMANDS} >= {"generate", "serve", "evaluate", "score", "train", "rate", "data"}


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS])
def test_documented_command_exists_with_its_flags(where, command):
    sub, method, flags = _parse(command)
    assert sub in SUBCOMMANDS, f"{where}: `{command}` uses unknown subcommand {sub!r}"
    target = load_subcommand(sub)
    if sub in GROUPS:
        if method is None:  # the group itself, e.g. `radfm rate`
            assert not flags, f"{where}: `{command}`: flags given to the group `radfm {sub}` without a command"
            return
        assert hasattr(target, method), f"{where}: `{command}`: no command {method!r} in `radfm {sub}`"
    accepted, takes_any = _accepts(target, method)
    # fire's boolean negation: --noflag for flag
    unknown = [f for f in flags if f not in accepted and f != "help" and not (f.startswith("no") and f[2:] in accepted)]
    assert takes_any or not unknown, f"{where}: `{command}` shows flag(s) {unknown} that `radfm {sub}` does not take"


@pytest.mark.parametrize("argv", sorted({(s, m) for s, m, _ in (_parse(c) for _, c in COMMANDS)}, key=str),
                         ids=lambda a: " ".join(x for x in a if x))
def test_help_of_each_documented_command(argv):
    args = [part for part in argv if part] + ["--help"]
    out = io.StringIO()  # fire prints help on stderr, our own usage on stdout
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), pytest.raises(SystemExit) as exit_:
        main(args)
        raise SystemExit(0)  # a help that returns normally is fine too
    assert exit_.value.code in (0, None), f"radfm {' '.join(args)} exited {exit_.value.code}: {out.getvalue()[-500:]}"
    assert out.getvalue().strip(), f"radfm {' '.join(args)} printed no help"
