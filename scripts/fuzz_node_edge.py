"""Run the generated attacks on the Storage SCP's edge many times (issue 28, Build 6).

    python scripts/fuzz_node_edge.py                  # 2,000 generated peers
    python scripts/fuzz_node_edge.py --examples 5000

Runs the property of ``tests/node/test_scp_generated.py`` (pynetdicom as the attacker against
one running SCP: random AE titles and hosts, instances around ``max_instance_mb``, deflated ones
past ``max_scan_mb``, bad UIDs, silent sockets) with random (not derandomized) generation, and
prints the outcome counts as Markdown with the command line. A broken guarantee fails the run
with hypothesis' smallest failing peer.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="generated peers")
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error("--examples: expected at least 1")
    os.environ["RADFM_NODE_EDGE_EXAMPLES"] = str(args.examples)  # read when the test module is imported
    spec = importlib.util.spec_from_file_location("scp_generated", REPO / "tests" / "hospital" /
                                                  "test_scp_generated.py")
    props = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = props
    spec.loader.exec_module(props)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="radfm-fuzz-node-") as root:
        node = props._Node(Path(root))
        try:
            _run(props, node)
        finally:
            node.close()
    seconds = time.perf_counter() - started
    counts = props.COUNTS
    total = sum(v for k, v in counts.items() if k != "with silent sockets open")
    command = " ".join(["python scripts/fuzz_node_edge.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"`{command}`")
    print()
    print("| outcome | peers |")
    print("|---|---|")
    for outcome, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        if outcome != "with silent sockets open":
            print(f"| {outcome} | {count} |")
    print(f"| **all generated peers** | **{total}** |")
    print(f"| of which with 1-10 silent sockets open meanwhile | {counts['with silent sockets open']} |")
    print()
    print(f"Every peer: the guarantees of tests/node/test_scp_generated.py held; {seconds:.0f} s.")
    return 0


def _run(props, node) -> None:
    """The property with the node given (the pytest fixture is not available outside pytest)."""
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=props.EXAMPLES, deadline=None, derandomize=False, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(peer=props.peers())
    def run(peer):
        props.run_peer(node, peer)

    run()


if __name__ == "__main__":
    raise SystemExit(main())
