"""Run the pull mode's generated cases many times (issue 28, Build 6) and print what they came to.

    python scripts/fuzz_dicomweb_pull.py                   # 2,000 generated polls
    python scripts/fuzz_dicomweb_pull.py --examples 5000

Runs the property of ``tests/node/test_dicomweb_pull_properties.py`` (a hostile DICOMweb
server on 127.0.0.1 answering with generated search answers, multipart bodies, redirects,
encodings and trickles; one poll of the node's pull per example) with random, not derandomized,
generation, and prints as Markdown how many polls ran, how each poll and each study ended, and
the time taken. Any broken property (a poll past its deadline, part of a study kept, an endless
part read past the limit, a redirect followed off the host, a clean study refused, a temp file
left) stops the run with hypothesis' minimal example and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="generated polls")
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error("--examples: expected at least 1")
    # each refusal is logged by the node (a warning per study); the counts below say the same, once
    logging.getLogger("radfm.node").setLevel(logging.CRITICAL)
    logging.getLogger("python_multipart").setLevel(logging.CRITICAL)
    os.environ["RADFM_PULL_EXAMPLES"] = str(args.examples)  # read when the test module is imported
    spec = importlib.util.spec_from_file_location("pull_properties", REPO / "tests" / "hospital" /
                                                  "test_dicomweb_pull_properties.py")
    props = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = props
    spec.loader.exec_module(props)

    started = time.perf_counter()
    failure = None
    try:
        props.test_generated_dicomweb_answers_never_hold_the_pull_keep_part_of_a_study_or_read_past_the_cap()
    except Exception as error:  # hypothesis re-raises the smallest failing example
        failure = error
    took = time.perf_counter() - started
    counts = props.OUTCOMES
    command = "python scripts/fuzz_dicomweb_pull.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    print(f"`{command}`\n")
    print(f"{counts['polls']} generated polls against a hostile DICOMweb server on 127.0.0.1 "
          f"(max_instance_mb=1, endless parts of {props.ENDLESS_BYTES // props.MiB} MiB), {took:.0f} s; "
          f"properties broken: {'none' if failure is None else 1}\n")
    print("| outcome | count |\n|---|---|")
    for name, count in sorted(counts.items(), key=lambda item: (not item[0].startswith("poll"), item[0])):
        if name != "polls":
            print(f"| {name} | {count} |")
    if failure is not None:
        print(f"\nFAILED: {type(failure).__name__}: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
