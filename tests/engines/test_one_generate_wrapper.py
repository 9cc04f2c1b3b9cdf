"""One generate wrapper (issue 30): the Ignite engines answer through the request path's
``ModelAnswerer.answer_batch``, so validation, the bundles' inferer and the service give one case one answer."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from radfm.answering.answerer import ModelAnswerer

PROMPT = "<image> Is this a CT scan?"
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from radfm.model.loading import load

    return load(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture
def scan(tmp_path):
    path = tmp_path / "scan.nii.gz"
    volume = np.random.default_rng(3).random((28, 24, 10), dtype=np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return path


@pytest.fixture
def wrapper_calls(monkeypatch):
    """Records each call of ``ModelAnswerer.answer_batch`` (the one wrapper) and passes it on."""
    calls: list[list[str]] = []
    original = ModelAnswerer.answer_batch

    def recorded(self, prompts, images, options, stream=None):
        calls.append(list(prompts))
        return original(self, prompts, images, options, stream=stream)

    monkeypatch.setattr(ModelAnswerer, "answer_batch", recorded)
    return calls


def test_validation_the_inferer_and_the_request_path_give_the_same_answer(loaded, scan, wrapper_calls):
    from radfm.answering.identity import ModelIdentity
    from radfm.answering.limits import Limits
    from radfm.answering.request import AnswerRequest, RequestPath, ScanInput
    from radfm.engines.inference import GenerationInferer
    from radfm.engines.validation import ClosedSetEvaluator

    model, processor = loaded
    answerer = ModelAnswerer(model, processor, identity=ModelIdentity())
    request = AnswerRequest(PROMPT, [ScanInput(scan.name, path=scan)], {"max_new_tokens": NEW_TOKENS})
    served = RequestPath(answerer, Limits()).run_blocking(request).text
    image = answerer.prepare([scan])[0]  # the scan as the request path prepared it, at the model's grid

    batch = {"ids": ["case0"], "task": ["modality_inductive"], "prompt": [PROMPT], "images": [[image]],
             "reference": ["yes"], "choices": [["yes", "no"]]}
    evaluator = ClosedSetEvaluator(device="cpu", val_data_loader=[batch], network=model, processor=processor,
                                   max_new_tokens=NEW_TOKENS)
    evaluator.run()
    validated = evaluator.state.output["prediction"][0]

    grid = processor.image_processor.grid
    inferer = GenerationInferer(processor, max_new_tokens=NEW_TOKENS, trained_grid=grid, image_grid=grid)
    inferred = inferer({"prompt": [PROMPT], "images": [[image]]}, model)[0]

    assert served  # a real answer to compare, not three empty strings
    assert validated == inferred == served
    assert wrapper_calls == [[PROMPT]] * 3  # the service, validation and the inferer: one wrapper


def test_an_engine_refuses_a_scan_off_the_processors_grid(loaded):
    """A prepared scan at another grid would be preprocessed a second time by the processor: refused, naming both."""
    import torch

    from radfm.engines.inference import answer_prompts
    from radfm.model.processing import GridMismatchError

    model, processor = loaded
    with pytest.raises(GridMismatchError, match="trained at"):
        answer_prompts(model, processor, [PROMPT], [[torch.rand(3, 40, 40, 4)]], max_new_tokens=2)


def test_no_second_generate_wrapper_is_left():
    import radfm.engines.validation as validation

    assert not hasattr(validation, "generate_answers")
