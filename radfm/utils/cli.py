"""Helpers for fire command lines: list arguments, and checking a command line before it runs."""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable


def as_list(value: object) -> list[str]:
    """A fire list argument as a list of non-empty strings.

    fire hands a list over as a list or tuple (``--x a,b`` or ``--x '[a,b]'``), as a plain string
    (``"a,b"``, or ``"[a,b]"`` when it could not parse it) or as a scalar (``--x 3``); ``None``
    means not given. Commas inside items are split too, and stray quotes are dropped.
    """
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [part for item in value for part in as_list(item)]
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):  # '[a.jsonl,b.jsonl]' that fire left as a string
        text = text[1:-1]
    parts = (part.strip().strip("'\"") for part in text.split(","))
    return [part for part in parts if part]


# errors a user causes (a missing file, a bad manifest, unreadable text): one line, no traceback
INPUT_ERRORS = (OSError, ValueError, LookupError)


def one_line(error: BaseException) -> str:
    """An exception as one line: its message with line breaks folded (tracebacks need ``--debug``)."""
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start})"
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())


# ---- flag validation before any work ----------------------------------------------------------

_SHORT_FLAG = re.compile(r"^-[A-Za-z]$")
HELP_FLAGS = ("--help", "-h")


class UsageError(ValueError):
    """A command line that cannot be right (unknown flag, bad value, missing argument): exit status 2."""


def _is_flag(token: str) -> bool:
    return token.startswith("--") or bool(_SHORT_FLAG.match(token))


def nearest(name: str, choices: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str | None:
    """The choice closest to ``name`` (a likely misspelling), or ``None``."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff)
    return match[0] if match else None


def _did_you_mean(name: str, choices, prefix: str = "--") -> str:
    guess = nearest(name, choices)
    return f" (did you mean {prefix}{guess}?)" if guess else ""


def command_names(group: object) -> list[str]:
    """The public commands (methods) of a command group instance."""
    return sorted(name for name, member in inspect.getmembers(group)
                  if not name.startswith("_") and callable(member))


def _annotation_kind(parameter: inspect.Parameter) -> str | None:
    """``"int"``, ``"float"`` or ``"bool"`` when the annotation is one of those (optionally ``| None``)."""
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = {part.strip() for part in str(text).replace("Optional[", "").rstrip("]").split("|")} - {"None"}
    return next(iter(parts)) if len(parts) == 1 and next(iter(parts)) in ("int", "float", "bool") else None


def _check_value(flag: str, kind: str | None, value: str) -> None:
    """Refuse a flag value fire would pass on as a string where the function expects a number or bool."""
    if kind is None or value in ("None",):
        return
    text = value.strip()
    if kind == "bool":
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise UsageError(f"--{flag}: expected true or false, got {value!r}")
    elif kind == "int":
        try:
            int(text.replace("_", ""))
        except ValueError:
            raise UsageError(f"--{flag}: expected an integer, got {value!r}") from None
    elif kind == "float":
        try:
            number = float(text)
        except ValueError:
            raise UsageError(f"--{flag}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise UsageError(f"--{flag}: expected a finite number, got {value!r}")


def check_call(function: Callable, args: list[str]) -> None:
    """Check command-line ``args`` against ``function``'s signature the way fire will bind them.

    Raises :class:`UsageError` for an unknown or ambiguous flag (naming the nearest valid one),
    a value that cannot be the annotated int/float/bool, a surplus positional argument or a
    missing required one. Nothing is run.
    """
    signature = inspect.signature(function)
    parameters = [p for p in signature.parameters.values() if p.name != "self"]
    named = {p.name: p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    accepts_any_flag = any(p.kind is p.VAR_KEYWORD for p in parameters)
    accepts_any_positional = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    given: set[str] = set()
    positionals: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        index += 1
        if not _is_flag(token):
            positionals.append(token)
            continue
        key, has_value, value = token.lstrip("-").partition("=")
        key = key.replace("-", "_")
        is_bool_syntax = not has_value and (index == len(args) or _is_flag(args[index]))
        if key in named:
            keyword = key
        elif is_bool_syntax and key.startswith("no") and key[2:] in named:
            keyword = key[2:]
        elif len(key) == 1 and not accepts_any_flag:
            matches = [name for name in named if name[0] == key]
            if len(matches) != 1:
                raise UsageError(f"flag {token} is {'ambiguous: ' + ', '.join('--' + m for m in matches) if matches else 'unknown'}")
            keyword = matches[0]
        elif accepts_any_flag:  # e.g. config overrides; only a near-certain typo of a named flag is refused
            typo_of = nearest(key, list(named), cutoff=0.85)
            if typo_of is not None:
                raise UsageError(f"unknown flag {token.split('=')[0]} (did you mean --{typo_of}?)")
            keyword = key
        else:
            raise UsageError(f"unknown flag {token.split('=')[0]}{_did_you_mean(key, list(named))}")
        if not has_value and not is_bool_syntax:
            value, has_value = args[index], True
            index += 1
        if keyword in named:
            if has_value:
                _check_value(keyword, _annotation_kind(named[keyword]), value)
            given.add(keyword)
    open_slots = [p for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in given]
    if not accepts_any_positional and len(positionals) > len(open_slots):
        surplus = positionals[len(open_slots)]
        hint = ""
        if surplus.startswith("-") and not _is_flag(surplus):
            hint = " (flags start with --)"
        raise UsageError(f"unexpected argument {surplus!r}{hint}")
    for parameter, value in zip(open_slots, positionals):
        _check_value(parameter.name, _annotation_kind(parameter), value)
    missing = [p.name for p in open_slots[len(positionals):] if p.default is p.empty]
    missing += [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty and p.name not in given]
    if missing:
        raise UsageError(f"missing required argument(s): {', '.join('--' + name for name in missing)}")


def check_command_line(target: object, args: list[str]) -> None:
    """Check ``args`` for a subcommand ``target`` (a function, or a group instance whose first arg is the command).

    ``--help``/``-h`` and anything after fire's ``--`` separator are left to fire.
    """
    if "--" in args:
        args = args[: args.index("--")]
    if any(token in HELP_FLAGS for token in args):
        return
    if inspect.isroutine(target):
        return check_call(target, args)
    commands = command_names(target)
    if not args or _is_flag(args[0]):
        raise UsageError(f"expected a command: {', '.join(commands)}")
    command, rest = args[0], args[1:]
    if command.replace("-", "_") not in commands:
        guess = nearest(command.replace("-", "_"), commands)
        raise UsageError(f"unknown command {command!r}" + (f" (did you mean {guess}?)" if guess else "")
                         + f"; choose from: {', '.join(commands)}")
    member = getattr(target, command.replace("-", "_"))
    if inspect.isroutine(member):
        check_call(member, rest)
    else:
        check_command_line(member, rest)
