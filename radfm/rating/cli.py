"""``radfm rate``: create a blinded rating study, add raters, serve the web app, export results."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from radfm.utils.cli import as_list


class RateCommands:
    """Blinded radiologist rating of model answers (0–5, the paper's rubric) in the browser.

    Typical use:
      radfm rate create --study study/ --predictions radfm.jsonl,baseline.jsonl --raters alice,bob
      radfm rate serve --study study/            # then open http://127.0.0.1:8765
      radfm rate export --study study/ --output results/
    """

    def create(
        self,
        *more_predictions: str,
        study: str,
        predictions: str | list[str] | None = None,
        raters: str | list[str] | None = None,
        tasks: str | list[str] | None = None,
        per_task: int | None = None,
        seed: int = 0,
        link: bool = False,
        keep_errors: bool = False,
        data_root: str | None = None,
    ) -> None:
        """Build a new study folder from prediction files (one model each, same case ids).

        Args:
          study: new (or empty) folder for the study; scans are copied into it.
          predictions: predictions JSONL files, one per model: `--predictions a.jsonl b.jsonl`,
            `--predictions a.jsonl,b.jsonl` or a list.
          more_predictions: (positional) further predictions files.
          raters: optional rater names to register now; their tokens are printed once.
          tasks: optional tasks to keep, e.g. vqa,report,rationale (the paper's open-ended tasks).
          per_task: optional number of cases to sample at random per task (a positive integer).
          seed: seed for that sampling.
          link: hard-link scans instead of copying (same filesystem only; falls back to copying).
          keep_errors: also offer answers whose prediction row has a non-null "error".
          data_root: optional folder every image must lie in (symbolic links resolved). Images that
            are not scans (e.g. /etc/hostname) are refused either way.
        """
        from radfm.rating.study import create_study
        from radfm.utils.cli import UsageError

        if per_task is not None and (isinstance(per_task, bool) or not isinstance(per_task, int) or per_task < 1):
            raise UsageError(f"--per_task: expected a positive number of cases per task, got {per_task!r}")

        result = create_study(
            study,
            as_list(predictions) + as_list(more_predictions),
            tasks=as_list(tasks) or None,
            per_task=per_task,
            seed=seed,
            link=link,
            skip_errors=not keep_errors,
            raters=as_list(raters),
            data_root=data_root,
        )
        print(f"created study {result['study']}: {result['cases']} cases, models {', '.join(result['models'])}")
        for note in result["notes"]:
            print(f"note: {note}")
        for name, token in result["tokens"].items():
            print(f"rater {name}: token {token}")
        if result["tokens"]:
            print("Give each rater their token; it is not stored and cannot be shown again.")

    def add_rater(self, name: str, study: str) -> None:
        """Register a rater and print their sign-in token (shown once; only its hash is kept).

        Args:
          name: the rater's name (unique in the study; appears in the exported CSV).
          study: the study folder.
        """
        from radfm.rating import store

        with store.connect(study) as conn:
            token = store.add_rater(conn, str(name))
        print(token)

    def serve(self, study: str, host: str = "127.0.0.1", port: int = 8765, session_hours: float = 12.0,
              max_scan_mb: int = 2048) -> None:
        """Run the rating web app for a study (until Ctrl-C).

        Args:
          study: the study folder.
          host: address to bind; the default serves only this computer. Binding another address
            exposes the app (plain HTTP, token sign-in) to that network.
          port: TCP port.
          session_hours: a sign-in expires after this many hours (the rater enters the token again).
          max_scan_mb: largest decoded scan (MiB) a file's header may claim; bigger ones are refused.
        """
        from radfm.http.http_guard import guarded_server
        from radfm.rating.app import create_app

        app = create_app(study, session_ttl_s=float(session_hours) * 3600, max_scan_bytes=int(max_scan_mb) * 1024**2)
        if not _is_loopback(host):
            print(f"warning: binding {host}: the rating app is reachable from the network over plain HTTP", file=sys.stderr)
        print(f"rating app for {Path(study).resolve()} on http://{host}:{port}/")
        guarded_server(app, host, int(port)).run()  # header/body timeouts, Host/Origin check on loopback

    def export(self, study: str, output: str, reference: str | None = None, resamples: int = 1000, seed: int = 0) -> None:
        """Write ratings.csv, summary.md (means with 95% CIs, win/tie/lose) and summary.png.

        Args:
          study: the study folder.
          output: folder for the results (created if needed).
          reference: model compared against all others in the plot (default: first predictions file).
          resamples: bootstrap resamples for the confidence intervals.
          seed: bootstrap seed.
        """
        from radfm.rating.export import export_study

        written = export_study(study, output, reference=reference, n_resamples=int(resamples), seed=int(seed))
        for kind, path in written.items():
            print(f"{kind}: {path}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
