"""The doors of the request path that are not HTTP: ``generate`` (``radfm generate``), ``evaluate``
(``radfm evaluate``: a request per manifest case, batched), ``mlflow_model`` (+ ``mlflow_pyfunc_code``:
the MLflow pyfunc model) and ``classify`` (``radfm classify``: a classifier folder).

Each turns its input into ``radfm.answering.request.AnswerRequest``s and the one error type back
into its own (exit status, a case's ``error``, a row's ``error``). The HTTP doors live in
``radfm.http``, the DICOM ones in ``radfm.node`` and ``radfm.deploy``.
Nothing is imported here so that ``radfm`` subcommands stay light.
"""
