"""Progress bars in a log file: plain lines, no carriage returns (radfm.utils.progress)."""

from __future__ import annotations

import io

from tqdm import tqdm

from radfm.utils.progress import tqdm_options


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_redirected_bar_writes_plain_lines():
    log = io.StringIO()
    for _ in tqdm(range(50), desc="epoch 1", **tqdm_options(log, interval=0)):
        pass
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines and all(line.startswith("epoch 1:") for line in lines) and "50/50" in lines[-1]


def test_redraws_are_rate_limited_and_the_last_state_is_kept():
    log = io.StringIO()
    bar = tqdm(range(200), desc="epoch 2", **tqdm_options(log, interval=3600))
    for _ in bar:
        bar.set_postfix(loss=0.25)  # a redraw per iteration, as ignite's bar does
    lines = log.getvalue().splitlines()
    assert 2 <= len(lines) <= 3, lines  # the first redraw, the final state (and at most one in between)
    assert "200/200" in lines[-1] and "loss=0.25" in lines[-1]


def test_a_terminal_keeps_tqdm_defaults():
    assert tqdm_options(_Terminal()) == {}


def test_the_training_bar_is_log_friendly(capsys):
    """The bundles' ignite bar (radfm.engines.handlers.ProgressBar) on a redirected stderr."""
    from ignite.engine import Engine

    from radfm.engines.handlers import ProgressBar

    engine = Engine(lambda engine, batch: {"loss": 0.5})
    ProgressBar().attach(engine)
    engine.run(range(20), max_epochs=1)
    err = capsys.readouterr().err
    assert "\r" not in err and "loss=0.5" in err
