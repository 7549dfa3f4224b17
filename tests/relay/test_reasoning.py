import pytest

from app.relay.reasoning import strip_chunk, strip_message

pytestmark = pytest.mark.unit


def chunk(delta, finish=None, usage=None):
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": usage}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # only reasoning: dropped, never sent as an empty delta
        (chunk({"reasoning_content": "hmm"}), None),
        (chunk({"role": "assistant", "content": None, "reasoning_content": ""}), None),
        (chunk({"reasoning": "hmm"}), None),
        # content with reasoning alongside: reasoning removed, content kept
        (chunk({"content": "Hi", "reasoning_content": "x"}), chunk({"content": "Hi"})),
        # nothing to strip: unchanged, even when empty
        (chunk({"content": "Hi"}), chunk({"content": "Hi"})),
        (chunk({"role": "assistant", "content": ""}), chunk({"role": "assistant", "content": ""})),
        # a finish reason is kept even when the delta is reasoning only
        (chunk({"reasoning_content": "x"}, finish="stop"), chunk({}, finish="stop")),
        # tool calls are visible output
        (
            chunk({"reasoning_content": "x", "tool_calls": [{"index": 0}]}),
            chunk({"tool_calls": [{"index": 0}]}),
        ),
        # the usage chunk has no choices and passes
        ({"choices": [], "usage": {"prompt_tokens": 1}}, {"choices": [], "usage": {"prompt_tokens": 1}}),
    ],
)
def test_strip_chunk(before, after):
    assert strip_chunk(before) == after


def test_strip_message_removes_both_fields_from_every_choice():
    body = {
        "choices": [
            {"message": {"role": "assistant", "content": "a", "reasoning_content": "r"}},
            {"message": {"role": "assistant", "content": "b", "reasoning": "r"}},
        ]
    }
    assert strip_message(body) == {
        "choices": [
            {"message": {"role": "assistant", "content": "a"}},
            {"message": {"role": "assistant", "content": "b"}},
        ]
    }
