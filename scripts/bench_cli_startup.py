"""Start-up time of quick ``radfm`` commands, an older commit vs this checkout, side by side in one run.

The older code is a ``git archive`` of ``--before`` (default ``1cd378a``, when ``import radfm``
imported torch and transformers) unpacked to a temporary folder and put first on ``PYTHONPATH``;
this checkout runs the same way, so both sides pay the same interpreter start-up. Each command
runs as the ``radfm`` console script does (``from radfm.cli import main; main()``) in a fresh
process; runs alternate old/new so that machine noise hits both sides. Prints Markdown (wall
seconds, median and range over ``--repeats`` runs) with the command line that produced it.

    python scripts/bench_cli_startup.py [--before 1cd378a] [--repeats 5] [--output cli_startup.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# what the `radfm` console script runs
CONSOLE_SCRIPT = "import sys; sys.argv[0] = 'radfm'; from radfm.cli import main; main()"
COMMANDS: list[tuple[str, list[str]]] = [
    ("radfm --help", ["-c", CONSOLE_SCRIPT, "--help"]),
    ("radfm generate --limt 3 (misspelled flag)", ["-c", CONSOLE_SCRIPT, "generate", "--limt", "3"]),
    ("radfm node status --help", ["-c", CONSOLE_SCRIPT, "node", "status", "--help"]),
    ("radfm serve --prot 1 (misspelled flag)", ["-c", CONSOLE_SCRIPT, "serve", "--prot", "1"]),
    ("radfm evaluate --manifset m (misspelled flag)", ["-c", CONSOLE_SCRIPT, "evaluate", "--manifset", "m"]),
    ('python -c "import radfm.cli"', ["-c", "import radfm.cli"]),
]


def unpack(revision: str, folder: Path) -> Path:
    """``git archive REVISION`` of this repository unpacked into ``folder``.

    Args:
        revision: a commit, tag or branch of this repository.
        folder: where to unpack (created).

    Returns:
        The folder holding the package at that revision.
    """
    archive = folder / "code.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), revision], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "code", filter="data")
    return folder / "code"


def _env(code: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_once(code: Path, args: list[str]) -> float:
    """Wall seconds of one ``python ARGS`` with ``code`` first on the path (exit status 0 or 2 expected)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=_env(code), capture_output=True, text=True, cwd=code)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 2):
        raise RuntimeError(f"{args} under {code} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def check_source(code: Path) -> None:
    """Fail unless ``import radfm`` really picks the package under ``code`` (not the installed one)."""
    out = subprocess.run([sys.executable, "-c", "import radfm; print(radfm.__file__)"], env=_env(code), cwd=code,
                         capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(code.resolve()):
        raise RuntimeError(f"PYTHONPATH={code} imported radfm from {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="1cd378a", help="the older commit to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", help="also write the Markdown here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="radfm-cli-startup-") as tmp:
        sides = {f"before ({args.before})": unpack(args.before, Path(tmp)), "after (this checkout)": REPO}
        for code in sides.values():
            check_source(code)
        times: dict[tuple[str, str], list[float]] = {}
        for label, command in COMMANDS:
            for _side, code in sides.items():  # one warm-up each: the page cache, not the code, is cold at first
                run_once(code, command)
            for repeat in range(args.repeats):
                order = list(sides.items()) if repeat % 2 == 0 else list(sides.items())[::-1]
                for side, code in order:
                    times.setdefault((label, side), []).append(run_once(code, command))
    load = os.getloadavg()[0]
    lines = ["# `radfm` start-up: before vs after", "",
             f"Command: `python scripts/bench_cli_startup.py --before {args.before} --repeats {args.repeats}`  ",
             f"Wall seconds per fresh process, median (min–max) of {args.repeats} alternating runs after one "
             f"warm-up; {os.cpu_count()} CPUs, load average {load:.1f} at the end.", "",
             "| command | " + " | ".join(sides) + " | ratio |", "|---|" + "---:|" * (len(sides) + 1)]
    for label, _ in COMMANDS:
        medians = [statistics.median(times[(label, side)]) for side in sides]
        cells = [f"{m:.2f} ({min(times[(label, side)]):.2f}–{max(times[(label, side)]):.2f})"
                 for m, side in zip(medians, sides)]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {medians[0] / medians[-1]:.1f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
