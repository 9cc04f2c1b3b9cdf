"""Schemathesis against the service's own OpenAPI schema: every route, OpenAI ones included.

Bodies are generated from ``/openapi.json`` (valid and invalid ones); whatever comes in, the
service answers without a 5xx and never with a traceback. Bounded for CI: a few examples per
route (RADFM_FUZZ_EXAMPLES=200 for a longer run), no shrinking.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="install the test extra: pip install -e .[test]")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402  (schemathesis brings hypothesis)

from radfm.interop.service import create_app  # noqa: E402
from radfm.serving.limits import Limits  # noqa: E402


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
