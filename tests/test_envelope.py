from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from crawler.api.envelope import error_message


def test_documented_envelope() -> None:
    body = json.dumps({"success": False, "result": {}, "errors": [
        {"code": 7002, "message": "name is too long", "path": ["body", "name"]}]}).encode()
    assert error_message(422, body) == "HTTP 422: 7002 name is too long (body.name)"


def test_intro_page_envelope() -> None:
    body = json.dumps({"error": {"code": "schema_mismatch", "message": "input_schema differs"}})
    assert error_message(422, body.encode()) == "HTTP 422: schema_mismatch input_schema differs"


def test_html_from_a_proxy() -> None:
    body = b"<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"
    message = error_message(502, body, "text/html")
    assert message.startswith("HTTP 502: non-JSON body:")
    assert "502 Bad Gateway" in message and "<h1>" not in message


def test_empty_and_huge_bodies() -> None:
    assert error_message(500, b"") == "HTTP 500 with an empty body"
    assert len(error_message(500, b"x" * 1_000_000)) < 300


@given(st.binary(max_size=2000))
def test_never_raises_on_bytes(body: bytes) -> None:
    assert error_message(400, body).startswith("HTTP 400")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=30))
def test_never_raises_on_json(value: object) -> None:
    assert error_message(409, json.dumps(value).encode()).startswith("HTTP 409")
