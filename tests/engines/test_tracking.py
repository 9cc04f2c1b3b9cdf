"""TrackingParams with MONAI's MLFlowHandler: params reach the run, and a crash ends it FAILED (not RUNNING)."""

from __future__ import annotations

import pytest
from ignite.engine import Engine

from radfm.engines.handlers import TrackingParams


def _engine_with_tracking(tmp_path, fail_at: int | None):
    from monai.handlers import MLFlowHandler

    def step(engine, batch):
        if fail_at is not None and engine.state.iteration == fail_at:
            raise RuntimeError("out of memory (simulated)")
        return {"loss": 0.5}

    engine = Engine(step)
    TrackingParams({"learning_rate": 0.01, "model": "tiny"}).attach(engine)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    MLFlowHandler(tracking_uri=uri, experiment_name="t", output_transform=lambda out: out["loss"],
                  close_on_complete=True).attach(engine)
    return engine, uri


def _only_run(uri):
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_params_are_logged_and_a_finished_run_is_finished(tmp_path):
    engine, uri = _engine_with_tracking(tmp_path, fail_at=None)
    engine.run(range(3), max_epochs=1)
    run = _only_run(uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.01" and run.data.params["model"] == "tiny"


def test_a_crash_ends_the_run_failed_and_is_raised_again(tmp_path):
    engine, uri = _engine_with_tracking(tmp_path, fail_at=2)
    with pytest.raises(RuntimeError, match="simulated"):
        engine.run(range(3), max_epochs=1)
    assert _only_run(uri).info.status == "FAILED"
