"""The HTTP doors of the request path (``radfm serve``).

``service`` (the app, ``POST /v1/answer``, the process and its flags), ``openai_api``
(``/v1/chat/completions``, ``/v1/models``), ``chat`` (the chat page and its API), ``api_schema``
(the bodies, documented), ``http_guard`` (the server edge: bounded reads, bounded JSON, host
checks). Each route turns its wire format into a ``radfm.answering.request.AnswerRequest`` and the
request path's ``RequestError`` back. Nothing is imported here so that ``radfm`` subcommands stay light.
"""
