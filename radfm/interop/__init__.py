"""The doors of the request path, and clinical interoperability.

Doors (each turns its wire format into a ``radfm.serving.request.AnswerRequest`` and the
request path's ``RequestError`` back): ``service`` (``radfm serve``: the app, ``POST /v1/answer``),
``chat`` (the chat page), ``openai_api`` (``/v1/chat/completions``), ``generate``
(``radfm generate``), ``mlflow_model`` (the pyfunc model); ``api_schema`` holds their
bodies as pydantic models (validation and ``/openapi.json``). Also: ``sr`` (``radfm export-sr``), ``info`` / ``memory_plan`` (``radfm info``),
``convert`` (``radfm convert``). Models load through ``radfm.load`` (``radfm/model/loading.py``).
Nothing is imported here so that ``radfm`` subcommands stay light.
"""
