"""Checks for ``python -m monai.bundle run`` on our bundles: refuse misspelled overrides, end in one line.

MONAI adds any ``--key value`` of the command line to the config, so ``--case "[...]"`` (for
``--cases``) is silently ignored and the run answers the default cases. Our bundle configs call
:func:`check_bundle_run` as their first ``initialize`` step; it compares the overrides with the
keys the config files define and raises :class:`BundleOverrideError` naming the nearest key.

Errors a user causes (a missing scan, an unreadable scan, a misspelled key) reach the user
through MONAI's wrappers (``Failed to evaluate ConfigExpression``, ``applying transform``) as a
long traceback. Under ``python -m monai.bundle`` :func:`check_bundle_run` also installs an
exception hook that prints such an error as one line (``RADFM_DEBUG=1`` keeps the traceback).
(A folder named ``radfm`` in the current folder, e.g. the clone itself, shadows the package; the
configs detect that with a plain-Python ``initialize`` step before this module is needed.)
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from radfm.utils.cli import INPUT_ERRORS, UsageError, nearest, one_line

DEBUG_ENV = "RADFM_DEBUG"
PROGRAM = "monai.bundle run"


class BundleOverrideError(UsageError):
    """A ``--key`` override that names no entry of the bundle's config files."""


def _create_workflow_frame() -> FrameType | None:
    """The frame of ``monai.bundle.scripts.create_workflow`` on the stack (it calls ``initialize``).

    Why a frame: MONAI merges the overrides into the config before any expression runs, so the
    config itself cannot tell them apart; ``create_workflow`` still holds them (``_args``) and the
    config files (``config_file``). If a MONAI release renames those locals the check finds
    nothing, and tests/bundles/test_bundle_errors.py fails.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "create_workflow" and frame.f_globals.get("__name__") == "monai.bundle.scripts":
            return frame
        frame = frame.f_back
    return None


def _workflow_parameters() -> set[str]:
    """Arguments of ``create_workflow``/``ConfigWorkflow`` that are not config overrides."""
    from monai.bundle import ConfigWorkflow

    names = set(inspect.signature(ConfigWorkflow.__init__).parameters) - {"self", "override"}
    return names | {"workflow_name", "config_file", "args_file"}


def _tracking_keys(tracking: Any) -> set[str]:
    """Config keys that ``--tracking`` settings add (``tracking_uri``, ``experiment_name``, ...)."""
    if tracking is None:
        return set()
    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    if isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS:
        settings = DEFAULT_EXP_MGMT_SETTINGS[tracking]
    elif isinstance(tracking, dict):
        settings = tracking
    else:
        settings = ConfigParser.load_config_files(tracking)
    return set(settings.get("configs", {}))


def unknown_overrides(config_files: str | Iterable[str], overrides: Iterable[str],
                      extra_keys: Iterable[str] = ()) -> list[str]:
    """One message per override id that the config files do not define.

    An id ``a#b#c`` needs its root key ``a`` in a config file (or in ``extra_keys``) and, when it is
    nested, its parent ``a#b`` (a new leaf under an existing entry is allowed: a new argument).
    """
    from monai.bundle import ConfigParser

    files = [config_files] if isinstance(config_files, (str, os.PathLike)) else list(config_files)
    parser = ConfigParser()
    parser.read_config(f=[str(f) for f in files])
    roots = set(parser.get()) | set(extra_keys)
    problems = []
    for override in overrides:
        parts = override.split("#")
        if parts[0] not in roots:
            guess = nearest(parts[0], sorted(roots))
            hint = f" (did you mean --{guess}?)" if guess else ""
            problems.append(f"unknown config key --{parts[0]}: no config file defines it{hint}")
        elif len(parts) > 2 and parts[0] in parser:
            parent = "#".join(parts[:-1])
            if parent not in parser:
                problems.append(f"unknown config entry --{override}: {parent!r} does not exist in the config")
    return problems


# MONAI's warning on every config it parses (`create_workflow`): it evals "$" values and imports "_target_"s
UNTRUSTED_CONFIG_WARNING = r"parsing config_file .*eval\(\)"


@contextlib.contextmanager
def shipped_configs(config_files: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[None]:
    """Run MONAI on ``config_files`` without its ``eval()`` warning when every one is a config we ship.

    Why: ``radfm train`` and ``radfm demo`` run the package's own bundle configs, so the warning meant
    for configs from elsewhere printed on every run. A config from anywhere else keeps the warning;
    only that one warning is filtered.

    Args:
        config_files: the config file(s) handed to ``monai.bundle.run``.

    Returns:
        A context manager.
    """
    from radfm.utils.resources import bundles_dir

    files = [config_files] if isinstance(config_files, (str, os.PathLike)) else list(config_files)
    shipped = bundles_dir().resolve()
    if not files or not all(Path(f).resolve().is_relative_to(shipped) for f in files):
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=UNTRUSTED_CONFIG_WARNING, category=UserWarning)
        yield


def check_bundle_run() -> None:
    """First ``initialize`` step of our bundle configs: refuse overrides that name no config key.

    Reads the overrides from ``create_workflow`` (the function ``python -m monai.bundle run`` and
    ``monai.bundle.run`` go through); a workflow made another way is not checked. Under
    ``python -m monai.bundle`` it also installs :func:`one_line_excepthook`.
    """
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == "monai.bundle.__main__":
        sys.excepthook = one_line_excepthook
    frame = _create_workflow_frame()
    if frame is None:
        return
    args: dict[str, Any] = dict(frame.f_locals.get("_args") or {})
    config_file = frame.f_locals.get("config_file")
    if config_file is None:
        return
    overrides = [key for key in args if key not in _workflow_parameters()]
    problems = unknown_overrides(config_file, overrides, extra_keys=_tracking_keys(args.get("tracking")) | {"_meta_"})
    if problems:
        raise BundleOverrideError("; ".join(problems))


def user_error(error: BaseException) -> BaseException | None:
    """The error a user caused inside MONAI's wrappers (the ``__cause__`` chain), or ``None``.

    MONAI wraps errors in ``RuntimeError`` ("Failed to evaluate ...", "applying transform ...")
    with ``raise ... from``; the innermost error of :data:`radfm.utils.cli.INPUT_ERRORS` (errors a user
    causes, printed in one line as by the ``radfm`` command) is the one that says what is wrong.
    (``__context__``, an error merely being handled nearby, is not followed.)
    """
    found, seen = None, set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, INPUT_ERRORS):
            found = current
        current = current.__cause__
    return found


def one_line_excepthook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    """``sys.excepthook`` for bundle runs: a user error as one line on stderr; anything else in full."""
    cause = user_error(error)
    if cause is None or os.environ.get(DEBUG_ENV):
        sys.__excepthook__(kind, error, traceback)
        return
    print(f"{PROGRAM}: error: {one_line(cause)} (set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
