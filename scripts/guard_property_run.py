"""Run the guard's property tests with many generated headers (issue 22, Build 6).

    python scripts/guard_property_run.py                  # 10,000 examples: 5,000 NRRD + 5,000 MetaImage
    python scripts/guard_property_run.py --examples 20000

Runs the two properties of ``tests/transforms/test_guard_properties.py`` (generated NRRD and
MetaImage headers; the real reader, pynrrd or ITK, run on each without our guard against a planted
secret) with random (not derandomized) generation, and prints how many headers were generated,
how many the guard refused, how many the bare reader would have read the secret through (each
of which the guard refused, or the run fails), and the time taken.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="headers in all, split over the two formats")
    args = parser.parse_args(argv)
    if args.examples < 2:
        parser.error("--examples: expected at least 2")
    os.environ["RADFM_GUARD_EXAMPLES"] = str(args.examples // 2)  # read when the test module is imported
    spec = importlib.util.spec_from_file_location("guard_properties", REPO / "tests" / "transforms" /
                                                  "test_guard_properties.py")
    props = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = props
    spec.loader.exec_module(props)

    counts = {"examples": 0, "refused": 0}
    leaks = {"pynrrd": 0, "itk": 0}
    guard, pynrrd_outside, itk_secret = props._guard_refuses, props._pynrrd_opens_outside, props._itk_reads_secret

    def counted_guard(path):
        counts["examples"] += 1
        refused = guard(path)
        counts["refused"] += refused
        return refused

    def counted(name, function):
        def run(*a):
            result = function(*a)
            leaks[name] += bool(result)
            return result
        return run

    props._guard_refuses = counted_guard
    props._pynrrd_opens_outside = counted("pynrrd", pynrrd_outside)
    props._itk_reads_secret = counted("itk", itk_secret)
    started = time.perf_counter()
    for test in (props.test_nrrd_guard_refuses_whatever_pynrrd_would_read_outside,
                 props.test_metaimage_guard_refuses_whatever_itk_would_read_outside):
        before, t0 = counts["examples"], time.perf_counter()
        test()  # hypothesis raises (with the falsifying example) if the property fails
        print(f"{test.__name__}: {counts['examples'] - before:,} headers in {time.perf_counter() - t0:.1f} s: passed")
    seconds = time.perf_counter() - started
    print(f"{counts['examples']:,} generated headers, {counts['refused']:,} refused by the guard; the bare reader "
          f"would have read the planted secret through {leaks['pynrrd']:,} (pynrrd) + {leaks['itk']:,} (ITK) of "
          f"them, every one refused by the guard; {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
