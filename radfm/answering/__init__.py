"""The request path: one module owns a request from the door to the model and back.

Every door builds an :class:`~radfm.answering.request.AnswerRequest` and calls
:meth:`RequestPath.run <radfm.answering.request.RequestPath.run>` (or ``stream``/``run_blocking``,
which call it); it only translates its wire format to the request and
:class:`~radfm.answering.refusal.RequestError` back::

    door (HTTP route, CLI, MLflow, evaluate)
      -> request.RequestPath.run(AnswerRequest)
           limits.Limits + options.parse_options     checked once, here, for every door
           request.Workspace                         one temp folder, removed on every exit
           worker.Worker.prepare (bounded pool,      write bytes, unzip, format check (scans.detect_kind),
              memory budget by header claims)         group DICOM series, read + preprocess (answerer.prepare)
           the engine (worker.start_engine; queue, deadline, stream, cancel):
              worker.ModelThread (transformers, one model thread) -> answerer.answer, or
              vllm_engine.VLLMEngine (vLLM, continuous batching)
      <- AnswerResult (text, prompt, scans, usage, timings) or RequestError (status, field)

Modules: ``refusal`` (RequestError), ``limits``, ``options`` (generation options, the one validator),
``scans`` (upload format detection, zips, DICOM grouping), ``conversation`` (turns ->
prompt), ``answerer`` (the model behind the path), ``engines`` (``--engine``: which loads), ``vllm_engine``,
``identity``, ``worker``, ``request``.
The doors live in ``radfm.http`` (``service``: ``/v1/answer``; ``chat``; ``openai_api``), ``radfm.doors``
(``generate``, ``evaluate``, ``mlflow_model``), ``radfm.node`` and ``radfm.deploy``.
Nothing is imported here so that ``import radfm`` stays light.
"""
