"""crawler.http1: request heads and response reading, from plain bytes.

The property test checks the reader against h11, an independent HTTP/1.1
implementation: whatever h11 (as a server) writes, the reader gives back
the same status, headers and body, split into chunks at any points.
"""

from __future__ import annotations

import itertools

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crawler.http1 import MAX_HEAD_BYTES, MAX_HEADERS, MalformedResponse, ResponseReader, request_head
from tests.hypothesis_profiles import examples

LIMIT = 1 << 20


def read(data: bytes, *, head: bool = False, max_body: int = LIMIT, pieces: int = 1) -> ResponseReader:
    reader = ResponseReader(head=head, max_body=max_body)
    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        if reader.feed(data[start:start + step]):
            break
    return reader


def test_a_body_with_content_length_in_one_feed_and_byte_by_byte() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
    for pieces in (1, len(answer)):
        reader = read(answer, pieces=pieces)
        assert reader.done and reader.reusable
        assert (reader.status, reader.reason, reader.body) == (200, "OK", b'{"a":1}')
        assert reader.headers == [(b"Content-Type", b"application/json"), (b"Content-Length", b"7")]


def test_a_chunked_body() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert reader.done and reader.reusable and reader.body == b"abcde"


def test_a_body_that_runs_to_the_close_ends_at_eof_and_the_connection_is_not_kept() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
    assert not reader.done
    reader.eof()
    assert reader.done and not reader.reusable and reader.body == b"all of it"


def test_a_close_before_the_declared_end_is_refused() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(MalformedResponse, match="before the end of its answer"):
        reader.eof()


def test_a_close_without_any_answer_is_refused() -> None:
    with pytest.raises(MalformedResponse, match="without answering"):
        ResponseReader(max_body=LIMIT).eof()


def test_bytes_that_are_not_http_are_refused() -> None:
    with pytest.raises(MalformedResponse, match=r"not an HTTP/1\.1 response"):
        read(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


def test_a_head_answer_ends_with_its_head_whatever_content_length_says() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 512\r\nDocker-Content-Digest: sha256:ab\r\n\r\n",
                  head=True)
    assert reader.done and reader.reusable and reader.body == b""
    assert (b"Docker-Content-Digest", b"sha256:ab") in reader.headers


def test_bytes_after_a_head_answer_make_the_connection_unfit() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", head=True)
    assert reader.done and not reader.reusable


def test_bytes_after_a_complete_answer_make_the_connection_unfit() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n\r\n")
    assert reader.done and not reader.reusable and reader.body == b"x"
    later = read(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    assert later.feed(b"junk") and not later.reusable


def test_connection_close_and_http_1_0_are_not_kept() -> None:
    closing = read(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    old = read(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert closing.done and old.done and not closing.reusable and not old.reusable


def test_informational_answers_are_skipped() -> None:
    reader = read(b"HTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\n"
                  b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
    assert reader.done and (reader.status, reader.reason, reader.body) == (404, "Not Found", b"{}")
    assert reader.headers == [(b"Content-Length", b"2")]


def test_no_content_has_no_body() -> None:
    reader = read(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert reader.done and reader.reusable and reader.body == b""


def test_a_declared_length_over_the_limit_is_not_read() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world", max_body=10)
    assert reader.done and reader.too_large and not reader.reusable and reader.body == b""


def test_a_body_past_the_limit_stops_reading() -> None:
    body = b"x" * 100
    reader = read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + body + b"\r\n0\r\n\r\n",
                  max_body=10)
    assert reader.done and reader.too_large and not reader.reusable and len(reader.body) > 10


def test_request_head_is_one_write_with_crlf_lines() -> None:
    assert request_head("GET", "/v2/a/manifests/1.0", [("Host", "r:5000"), ("Accept", "x/y")]) == (
        b"GET /v2/a/manifests/1.0 HTTP/1.1\r\nHost: r:5000\r\nAccept: x/y\r\n\r\n"
    )


@pytest.mark.parametrize("name, value", [
    ("Authorization", "Bearer abc\r\nX-Injected: 1"),
    ("Authorization", "Bearer abc\nX-Injected: 1"),
    ("Authorization", "Bearer \x00abc"),
    ("Bad Name", "v"),
    ("Bad:Name", "v"),
])
def test_request_head_refuses_header_injection_without_quoting_the_value(name: str, value: str) -> None:
    with pytest.raises(ValueError) as refused:
        request_head("GET", "/", [(name, value)])
    assert "abc" not in str(refused.value)


@pytest.mark.parametrize("target", ["", "/a b", "/a\r\nHost: x"])
def test_request_head_refuses_a_target_with_spaces_or_control_characters(target: str) -> None:
    with pytest.raises(ValueError, match="request target"):
        request_head("GET", target, [])


def test_request_head_is_what_h11_reads_as_the_same_request() -> None:
    data = request_head("HEAD", "/v2/x/manifests/sha256:ab?n=1", [("Host", "h"), ("Accept", "a, b")])
    server = h11.Connection(h11.SERVER)
    server.receive_data(data)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    assert (event.method, event.target) == (b"HEAD", b"/v2/x/manifests/sha256:ab?n=1")
    assert list(event.headers) == [(b"host", b"h"), (b"accept", b"a, b")]


_names = st.from_regex(r"X-[A-Za-z0-9]{1,12}", fullmatch=True)
_values = st.from_regex(r"[!-~]([ -~]{0,30}[!-~])?", fullmatch=True)


@settings(max_examples=examples(300), deadline=None)
@given(
    status=st.sampled_from([200, 201, 301, 401, 404, 429, 500, 503]),
    headers=st.lists(st.tuples(_names, _values), max_size=6),
    body=st.binary(max_size=3000),
    chunked=st.booleans(),
    http10=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=6),
)
def test_the_reader_agrees_with_h11_on_what_h11_writes(
    status: int, headers: list[tuple[str, str]], body: bytes, chunked: bool, http10: bool,
    cuts: list[int],
) -> None:
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET / HTTP/1.0\r\n\r\n" if http10 else b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(server.next_event(), h11.Request)
    server.next_event()  # EndOfMessage
    framing = [("Transfer-Encoding", "chunked")] if chunked else [("Content-Length", str(len(body)))]
    wire = server.send(h11.Response(status_code=status, headers=headers + framing))
    if body:
        half = len(body) // 2
        wire += server.send(h11.Data(data=body[:half])) + server.send(h11.Data(data=body[half:]))
    wire += server.send(h11.EndOfMessage())
    reader = ResponseReader(max_body=LIMIT)
    points = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    for start, end in itertools.pairwise(points):
        reader.feed(wire[start:end])
    if not reader.done:  # h11 frames an HTTP/1.0 answer by closing
        reader.eof()
    assert reader.done and reader.status == status and reader.body == body
    sent = [(k.encode(), v.encode()) for k, v in headers]
    assert [h for h in reader.headers if h[0].startswith(b"X-")] == sent
    assert reader.reusable == (server.our_state is h11.DONE and not http10)


def test_a_head_past_the_limit_is_refused_before_it_is_all_held() -> None:
    reader = ResponseReader(max_body=LIMIT)
    reader.feed(b"HTTP/1.1 200 OK\r\nX-Long: ")
    with pytest.raises(MalformedResponse, match="head is over"):
        for _ in range(MAX_HEAD_BYTES // 1000 + 2):
            reader.feed(b"x" * 1000)


def test_more_headers_than_the_limit_are_refused() -> None:
    many = b"".join(b"X-%d: 1\r\n" % n for n in range(MAX_HEADERS + 1))
    with pytest.raises(MalformedResponse, match="more than"):
        read(b"HTTP/1.1 200 OK\r\n" + many + b"Content-Length: 0\r\n\r\n")
    assert read(b"HTTP/1.1 200 OK\r\n" + many[: many.index(b"X-99:")] + b"Content-Length: 0\r\n\r\n").done


def test_a_protocol_switch_is_refused() -> None:
    with pytest.raises(MalformedResponse, match="switched protocols"):
        read(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")


def test_trailers_of_a_chunked_body_are_not_headers() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDocker-Content-Digest: sha256:aa\r\n\r\n"
                  b"2\r\n{}\r\n0\r\nDocker-Content-Digest: sha256:bb\r\nRetry-After: 9\r\n\r\n")
    assert reader.done and reader.body == b"{}"
    assert [v for k, v in reader.headers if k == b"Docker-Content-Digest"] == [b"sha256:aa"]
    assert all(k != b"Retry-After" for k, _ in reader.headers)


def test_not_modified_may_state_a_length_over_the_limit() -> None:
    reader = read(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 999999\r\n\r\n", max_body=10)
    assert reader.done and not reader.too_large and reader.reusable


def test_an_akua_request_body_must_be_framed_by_its_content_length() -> None:
    from crawler.api.connection import _check_framing

    _check_framing([(b"Content-Length", b"2")], b"{}")
    _check_framing([], b"")
    _check_framing([(b"content-length", b"0")], b"")
    for headers, body in [([], b"{}"), ([(b"Content-Length", b"3")], b"{}"),
                          ([(b"Content-Length", b"2"), (b"Content-Length", b"2")], b"{}"),
                          ([(b"Transfer-Encoding", b"chunked")], b"{}")]:
        with pytest.raises(ValueError):
            _check_framing(headers, body)
