"""The OpenAPI document says what the API answers (issue 25): each route's real statuses with
the error body, never FastAPI's 422 (the app answers a bad request 400). Checked against the
document and against the app itself, route by route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import set_settings

KEY = "s3cret-key"
GUARDED = {"401", "403"}  # API_KEY, and (a POST) no change from another site
CLOUD = GUARDED | {"400", "404", "409", "502", "503"}  # the cloud API's answers, and ours
EXPECTED = {
    ("post", "/jobs"): GUARDED | {"200", "202", "400", "409", "413", "415", "503"},
    ("get", "/jobs"): {"200", "400", "401"},
    ("get", "/jobs/{job_id}"): {"200", "401", "404"},
    ("post", "/jobs/{job_id}/cancel"): GUARDED | {"200", "404", "409"},
    ("post", "/jobs/{job_id}/retry"): GUARDED | {"202", "404", "409", "503"},
    ("get", "/jobs/{job_id}/events"): {"200", "400", "401", "404"},
    ("get", "/jobs/{job_id}/chunks"): {"200", "400", "401", "404"},
    ("get", "/jobs/{job_id}/chunks/{chunk_index}/items"): {"200", "400", "401", "404"},
    ("get", "/jobs/{job_id}/output"): {"200", "401", "404", "409", "503"},
    ("get", "/jobs/{job_id}/errors"): {"200", "401", "404", "409", "503"},
    ("post", "/inputs"): GUARDED | {"200", "400", "413"},
    ("put", "/inputs/{sha256}"): GUARDED | {"201", "400", "413"},
    ("get", "/cloud/jobs"): CLOUD | {"200"},
    ("post", "/cloud/jobs"): CLOUD | {"200", "202", "413", "415"},
    ("get", "/cloud/jobs/{job_id}"): CLOUD | {"200"},
    ("get", "/cloud/jobs/{job_id}/chunks"): CLOUD | {"200"},
    ("post", "/cloud/jobs/{job_id}/cancel"): CLOUD | {"200"},
    ("get", "/cloud/jobs/{job_id}/chunks/{chunk_index}/items"): CLOUD | {"200"},
    ("post", "/cloud/jobs/{job_id}/retry"): CLOUD | {"202"},
}


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, path, op) for path, ops in doc["paths"].items() for m, op in ops.items()]


@pytest.fixture
def doc(api: httpx.Client) -> dict[str, Any]:
    answer = api.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()  # type: ignore[no-any-return]


def test_each_route_documents_what_it_answers_and_no_422(doc: dict[str, Any]) -> None:
    documented = {(m, path): set(op["responses"]) for m, path, op in operations(doc)}
    assert not [route for route, codes in documented.items() if "422" in codes]
    for route, codes in EXPECTED.items():
        assert codes <= documented[route], (route, sorted(codes - documented[route]))
    assert "HTTPValidationError" not in doc["components"]["schemas"]  # FastAPI's 422 body


def test_errors_are_documented_with_the_error_body(doc: dict[str, Any]) -> None:
    body = doc["components"]["schemas"]["ErrorBody"]
    assert body["required"] == ["message"] and set(body["properties"]) == {"message", "errors"}
    for m, path, op in operations(doc):
        for code, answer in op["responses"].items():
            if code.startswith(("4", "5")):
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (m, path, code)


def test_what_the_app_answers_is_documented(
    api: httpx.Client, doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every /jobs, /inputs and /cloud operation, asked without the key, then with it about a
    job (or an input) that is not there and with a bad `limit`: each answer's status is one its
    route documents."""
    set_settings(monkeypatch, API_KEY=KEY, AWS_START_URL="")  # /cloud: 503, not configured
    keyed = {"x-api-key": KEY}
    bad_spec = b'{"total_items": true}'
    seen = set()
    for m, path, op in operations(doc):
        if not path.startswith(("/jobs", "/inputs", "/cloud/")):
            continue
        url = path.replace("{job_id}", "nope").replace("{chunk_index}", "0")
        params = {p["name"]: "0" for p in op.get("parameters", []) if p["name"] == "limit"}
        body = bad_spec if m in ("post", "put") else None
        json_type = {"content-type": "application/json"}
        answers = [
            api.request(m, url, headers=json_type, content=body),  # no key
            api.request(m, url, headers=keyed),  # no content type, no query
            api.request(m, url, params=params, headers={**keyed, **json_type}, content=body),
        ]
        for answer in answers:
            code = str(answer.status_code)
            seen.add(code)
            assert code in op["responses"], (m, path, code, answer.text)
            assert answer.status_code < 400 or "message" in answer.json()
    assert {"400", "401", "404", "415", "503"} <= seen  # the probes reached each kind


def test_the_api_docs_stay_open_with_a_key_set(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's choice: the document is the API's shape, no data (the dashboard builds its
    start form from it before any key is typed)."""
    set_settings(monkeypatch, API_KEY=KEY)
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert api.get(path).status_code == 200
    assert api.get("/jobs").status_code == 401
