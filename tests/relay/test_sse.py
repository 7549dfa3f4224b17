import pytest

from app.relay.sse import KEEPALIVE, LineDecoder, StreamDecoder, encode_event, iter_events

pytestmark = pytest.mark.unit


def decode(chunks):
    return list(iter_events(chunks))


@pytest.mark.parametrize(
    ("chunks", "events"),
    [
        ([b"data: a\n\n"], [b"a"]),
        ([b"data:a\n\n"], [b"a"]),  # no space after the colon
        ([b"data:  a\n\n"], [b" a"]),  # only one leading space is removed
        ([b"data: a\r\n\r\n"], [b"a"]),
        ([b"data: a\r\r"], [b"a"]),  # lone CR ends lines too
        ([b"data: a\r", b"\n\r\n"], [b"a"]),  # CRLF split across two reads
        ([b"data: a\r", b"\r"], [b"a"]),
        ([b"da", b"ta: a", b"\n", b"\n"], [b"a"]),
        ([b"data: a\ndata: b\n\n"], [b"a\nb"]),  # multi-line data joins with LF
        ([b": keep-alive\n\n", b"data: a\n\n"], [b"a"]),  # comments are skipped
        ([b"event: ping\n\n"], []),  # an event with no data dispatches nothing
        ([b"id: 7\nevent: x\ndata: a\n\n"], [b"a"]),
        ([b"data: a\n\ndata: b\n\n"], [b"a", b"b"]),
        ([b"data: a"], []),  # unterminated last event is dropped, per the spec
        ([b'data: {"t":"\xe2\x80\xa8"}\n\n'], [b'{"t":"\xe2\x80\xa8"}']),  # U+2028 is not a line end
        ([b"data: [DONE]\n\n"], [b"[DONE]"]),
    ],
)
def test_decoder(chunks, events):
    assert decode(chunks) == events


def test_decoder_every_split_point_gives_same_events():
    stream = b': keep-alive\r\n\r\ndata: {"a":1}\r\n\r\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\r\n\r\n'
    expected = [b'{"a":1}', b"x\ny", b"[DONE]"]
    for i in range(len(stream)):
        for j in range(i, len(stream)):
            assert decode([stream[:i], stream[i:j], stream[j:]]) == expected, (i, j)


def test_line_decoder_keeps_partial_line():
    decoder = LineDecoder()
    assert decoder.feed(b"abc") == []
    assert decoder.feed(b"def\nxy") == [b"abcdef"]
    assert decoder.flush() == [b"xy"]


def test_stream_decoder_counts_comments():
    decoder = StreamDecoder()
    decoder.feed(b": keep-alive\n\n: keep-alive\n\ndata: a\n\n")
    assert decoder.comments == 2


@pytest.mark.parametrize(
    ("data", "encoded"),
    [
        (b"a", b"data: a\n\n"),
        (b"a\nb", b"data: a\ndata: b\n\n"),
        (b"a\r\nb", b"data: a\ndata: b\n\n"),
    ],
)
def test_encode_event_round_trips(data, encoded):
    assert encode_event(data) == encoded
    assert decode([encoded]) == [data.replace(b"\r\n", b"\n")]


def test_keepalive_is_a_terminated_comment():
    assert KEEPALIVE.endswith(b"\n\n")
    assert decode([KEEPALIVE]) == []
