"""Schemathesis against the service's own OpenAPI schema: every route, OpenAI ones included.

Bodies are generated from ``/openapi.json`` (valid and invalid ones); whatever comes in, the
service answers without a 5xx and never with a traceback. Bounded for CI: a few examples per
route (RADFM_FUZZ_EXAMPLES=200 for a longer run), no shrinking.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="install the test extra: pip install -e .[test]")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402  (schemathesis brings hypothesis)

from radfm.answering.limits import Limits  # noqa: E402
from radfm.http.service import create_app  # noqa: E402


def test_no_route_answers_5xx_or_a_traceback(tiny_answerer):
    from hypothesis import given

    app = create_app(tiny_answerer, Limits(max_new_tokens=4, max_request_bytes=1 << 20, generation_timeout_s=20))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /v1/answer", "POST /v1/chat/completions", "POST /chat/api/answer", "POST /chat/api/scans",
        "POST /chat/api/export/sr", "GET /v1/models", "GET /health"}
    seen = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=int(__import__("os").environ.get("RADFM_FUZZ_EXAMPLES", "8")), deadline=None, phases=[Phase.explicit, Phase.generate], database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers={"Host": "127.0.0.1"})
            seen.append(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:500]}"
            assert "Traceback" not in response.text and 'File "' not in response.text

        check()
    assert len(seen) >= 4 * len(operations) and any(code == 200 for code in seen) and any(code >= 400 for code in seen)


# ---------------------------------------------------------------- S1 (issue 28): generated deep and huge bodies ----
_OPTION_FIELDS = {  # the numeric fields each route reads
    "/v1/chat/completions": ("max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "n"),
    "/chat/api/answer": ("max_new_tokens", "temperature", "top_p", "top_k", "seed"),
}
_MESSAGES = {"/v1/chat/completions": '[{"role": "user", "content": "Which?"}]',
             "/chat/api/answer": '[{"role": "user", "text": "Which?", "scans": []}]'}


def _out_of_range_numbers():
    """JSON number literals no option takes: 20 to 5000 digits, past float range, and the non-JSON NaN/Infinity."""
    from hypothesis import strategies as st

    digits = st.integers(20, 5000)
    return st.one_of(digits.map(lambda n: "9" * n), digits.map(lambda n: "-1" + "0" * n),
                     st.integers(309, 100_000).map(lambda e: f"1e{e}"), st.integers(309, 400).map(lambda e: f"-2.5e{e}"),
                     st.sampled_from(["NaN", "Infinity", "-Infinity"]))


def test_generated_deep_json_and_huge_numbers_are_4xx_naming_the_field(tiny_answerer):
    """Hypothesis: nesting from 150 to 100,000 deep anywhere in the body, and out-of-range numbers in every numeric
    field, on every JSON route and the answer form: 400/422 with a message (naming the field for numbers), never a 5xx."""
    from fastapi.testclient import TestClient
    from hypothesis import given
    from hypothesis import strategies as st

    client = TestClient(create_app(tiny_answerer, Limits(max_new_tokens=4, max_request_bytes=1 << 20)))
    examples = int(__import__("os").environ.get("RADFM_FUZZ_EXAMPLES", "8")) * 4

    def refusal(reply) -> str:
        assert reply.status_code in (400, 422), (reply.status_code, reply.text[:300])
        assert "Traceback" not in reply.text and 'File "' not in reply.text
        error = reply.json()["error"]
        return error["message"] if isinstance(error, dict) else error

    @given(route=st.sampled_from([*_OPTION_FIELDS, "/chat/api/export/sr"]), depth=st.integers(150, 100_000),
           where=st.sampled_from(["messages", "option", "inside"]), opener=st.sampled_from(["[", '{"a":']))
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def deep(route, depth, where, opener):
        nested = opener * depth + "1" + ("]" if opener == "[" else "}") * depth
        messages = _MESSAGES.get(route, "[]")
        body = {"messages": f'{{"messages": {nested}}}',
                "option": f'{{"messages": {messages}, "seed": {nested}}}',
                "inside": f'{{"messages": [{{"role": "user", "content": {nested}, "text": {nested}}}]}}'}[where]
        reply = client.post(route, content=body, headers={"Content-Type": "application/json"})
        if len(body.encode()) > 1 << 20 and reply.status_code == 413:  # over the body limit: refused as it streams in
            return
        refusal(reply)

    @given(route=st.sampled_from(list(_OPTION_FIELDS)), data=st.data(), number=_out_of_range_numbers())
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def huge(route, data, number):
        field = data.draw(st.sampled_from(_OPTION_FIELDS[route]))
        body = f'{{"messages": {_MESSAGES[route]}, "{field}": {number}}}'
        message = refusal(client.post(route, content=body, headers={"Content-Type": "application/json"}))
        beyond_parser = number in ("NaN", "Infinity", "-Infinity") or (number.lstrip("-").isdigit() and len(number) > 4300)
        assert ("not valid JSON" in message) if beyond_parser else (field in message), message

    @given(field=st.sampled_from(["max_new_tokens", "temperature", "top_p", "top_k", "num_beams", "seed",
                                  "repetition_penalty"]),
           number=_out_of_range_numbers().filter(lambda n: len(n) < 4300))
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def form(field, number):
        reply = client.post("/v1/answer", data={"prompt": "Which?", field: number}, files=[("files", ("a.png", b"x"))])
        assert reply.status_code == 422 and field in reply.json()["error"], reply.text[:300]

    deep()
    huge()
    form()
