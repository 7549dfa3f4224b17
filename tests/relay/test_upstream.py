from app.relay.upstream import UpstreamTarget, build_body, error_message

TARGET = UpstreamTarget(
    base_url="http://u/", api_key="secret", model="up-model", extra_body={"thinking": {"type": "disabled"}}
)


def test_build_body_keeps_every_client_field_and_sets_model():
    client = {
        "model": "public",
        "messages": [],
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 5,
        "stop": ["x"],
        "seed": 1,
        "n": 1,
        "logit_bias": {"1": 2},
        "tools": [],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "reasoning_effort": "high",
        "unknown_field": {"a": 1},
    }
    body = build_body(client, TARGET, stream=False)
    assert body == {**client, "model": "up-model", "thinking": {"type": "disabled"}}
    assert client["model"] == "public"  # the client's dict is not changed


def test_route_extras_do_not_override_the_client():
    body = build_body({"model": "p", "messages": [], "thinking": {"type": "enabled"}}, TARGET, stream=False)
    assert body["thinking"] == {"type": "enabled"}


def test_streams_always_ask_for_usage():
    body = build_body({"model": "p", "messages": [], "stream": True}, TARGET, stream=True)
    assert body["stream_options"] == {"include_usage": True}
    body = build_body({"model": "p", "stream_options": {"include_usage": False, "x": 1}}, TARGET, stream=True)
    assert body["stream_options"] == {"include_usage": True, "x": 1}


def test_target_repr_hides_the_key():
    assert "secret" not in repr(TARGET)
    assert TARGET.chat_url == "http://u/chat/completions"


def test_error_message_reads_openai_and_other_shapes():
    assert error_message(b'{"error": {"message": "bad"}}') == "bad"
    assert error_message(b'{"error": "flat"}') == "flat"
    assert error_message(b'{"message": "m"}') == "m"
    assert error_message(b"<html>oops</html>") == "<html>oops</html>"
