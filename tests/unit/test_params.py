import pytest
from google.protobuf import json_format
from llmaas.common.errors import ApiError
from llmaas.router.params import parse_chat_request
from llmaas.router.v1 import router_pb2


def req(**body) -> router_pb2.CreateChatCompletionRequest:
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return json_format.ParseDict(body, router_pb2.CreateChatCompletionRequest())


def refused(**body) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse_chat_request(req(**body))
    return e.value


def test_defaults_leave_sampling_unset():
    p = parse_chat_request(req())
    assert (p.temperature, p.top_p, p.max_tokens, p.stop, p.stream) == (None, None, None, (), False)


@pytest.mark.parametrize("field,value", [("temperature", 5), ("temperature", -0.1), ("top_p", 1.5),
                                         ("presence_penalty", 3), ("frequency_penalty", -2.5)])
def test_out_of_range_names_the_param(field, value):
    err = refused(**{field: value})
    assert err.param == field and err.type == "invalid_request_error" and err.body()["error"]["param"] == field


def test_max_tokens_and_completion_tokens():
    assert refused(max_tokens=0).param == "max_tokens"
    assert parse_chat_request(req(max_tokens=7)).max_tokens == 7
    assert parse_chat_request(req(max_completion_tokens=9, max_tokens=7)).max_tokens == 9


def test_messages_are_checked():
    assert refused(messages=[]).param == "messages"
    assert refused(messages=[{"role": "wizard", "content": "x"}]).param == "messages[0].role"
    assert refused(messages=[{"role": "user"}]).param == "messages[0].content"


def test_content_parts_and_images():
    p = parse_chat_request(req(messages=[{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
        {"type": "text", "text": "b"}]}]))
    assert p.messages[0].content == "ab" and p.messages[0].has_image
    assert refused(messages=[{"role": "user", "content": [{"type": "video"}]}]).param == "messages[0].content[0].type"


def test_stop_forms():
    assert parse_chat_request(req(stop="x")).stop == ("x",)
    assert parse_chat_request(req(stop=["a", "b"])).stop == ("a", "b")
    assert refused(stop=["1", "2", "3", "4", "5"]).param == "stop"
    assert refused(stop=3).param == "stop"


def test_stream_and_usage_flag():
    p = parse_chat_request(req(stream=True, stream_options={"include_usage": True}))
    assert p.stream and p.include_usage
    assert not parse_chat_request(req(stream_options={"include_usage": True}), stream=False).include_usage


def test_n_is_served_between_1_and_128():
    assert parse_chat_request(req(n=128)).n == 128 and parse_chat_request(req()).n == 1
    assert refused(n=129).param == "n" and refused(n=0).param == "n"


def test_top_p_zero_is_served_as_greedy():
    p = parse_chat_request(req(top_p=0))
    assert (p.temperature, p.top_p) == (0.0, None)
    assert parse_chat_request(req(top_p=0.5)).top_p == 0.5


def test_top_k_zero_means_no_top_k():
    assert parse_chat_request(req(top_k=0)).top_k is None
    assert parse_chat_request(req(top_k=5)).top_k == 5


def test_size_limits_are_context_length_exceeded_naming_the_limit():
    from llmaas.router.params import MAX_MESSAGE_BYTES, MAX_MESSAGES

    err = refused(messages=[{"role": "user", "content": "hi"}] * 10_000)
    assert (err.param, err.code) == ("messages", "context_length_exceeded") and str(MAX_MESSAGES) in err.message
    err = refused(messages=[{"role": "user", "content": "x" * (MAX_MESSAGE_BYTES + 1)}])
    assert (err.param, err.code) == ("messages[0].content", "context_length_exceeded")
    assert str(MAX_MESSAGE_BYTES) in err.message


def test_max_tokens_param_is_remembered_for_errors():
    assert parse_chat_request(req(max_completion_tokens=9)).max_tokens_param == "max_completion_tokens"
    assert parse_chat_request(req(max_tokens=9)).max_tokens_param == "max_tokens"
    assert refused(max_completion_tokens=9, max_tokens=0).param == "max_tokens"


def test_an_earlier_answers_message_object_is_accepted_back_and_audio_is_refused():
    history = [{"role": "user", "content": "hi"},
               {"role": "assistant", "content": '{"a": 1}', "parsed": {"a": 1}, "annotations": [], "refusal": None,
                "audio": None, "function_call": None},
               {"role": "user", "content": "more"}]
    assert [m.content for m in parse_chat_request(req(messages=history)).messages][1] == '{"a": 1}'
    for name, value in (("audio", {"id": "a1"}), ("function_call", {"name": "f", "arguments": "{}"})):
        bad = [dict(history[1], **{name: value}), history[2]]
        assert refused(messages=bad).param == f"messages[0].{name}"


def test_stream_obfuscation_is_not_offered():
    assert refused(stream=True, stream_options={"include_obfuscation": True}).param == \
        "stream_options.include_obfuscation"
    assert parse_chat_request(req(stream=True, stream_options={"include_usage": True,
                                                               "include_obfuscation": False})).include_usage


@pytest.mark.parametrize(("content", "param", "code"), [
    ([{"type": "text", "txt": "hi"}], "messages[0].content[0].txt", "unknown_parameter"),
    ([{"type": "text"}], "messages[0].content[0].text", "missing_required_parameter"),
    ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA==", "detial": "high"}}],
     "messages[0].content[0].image_url.detial", "unknown_parameter"),
    ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA==", "detail": "max"}}],
     "messages[0].content[0].image_url.detail", "invalid_value"),
    ([{"type": "image", "image": "data:image/png;base64,AA==", "format": "png"}], "messages[0].content[0].format",
     "unknown_parameter"),
])
def test_a_content_parts_keys_are_checked(content, param, code):
    error = refused(messages=[{"role": "user", "content": content}])
    assert (error.param, error.code) == (param, code)


def test_served_content_parts_and_detail():
    for detail in ("auto", "high", "low", None):
        image = {"url": "data:image/png;base64,AA==", **({"detail": detail} if detail else {})}
        p = parse_chat_request(req(messages=[{"role": "user", "content": [
            {"type": "text", "text": "read"}, {"type": "image_url", "image_url": image}]}]))
        assert p.messages[0].content == "read" and p.messages[0].has_image
        assert [(i.url, i.low) for i in p.messages[0].images] == [("data:image/png;base64,AA==", detail == "low")]
    simplified = {"type": "image", "image": "data:x;base64,AA=="}
    p = parse_chat_request(req(messages=[{"role": "user", "content": [simplified]}]))
    assert [(i.url, i.low) for i in p.messages[0].images] == [("data:x;base64,AA==", False)]  # the reference's form


def test_a_tool_calls_keys_are_checked():
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert parse_chat_request(req(messages=[{"role": "assistant", "content": None, "tool_calls": [dict(call, index=0)]},
                                            {"role": "tool", "tool_call_id": "call_1", "content": "x"}]))
    for bad, param in ((dict(call, idx=0), "messages[0].tool_calls[0].idx"),
                       (dict(call, function={"name": "f", "arguments": "{}", "argz": 1}),
                        "messages[0].tool_calls[0].function.argz")):
        error = refused(messages=[{"role": "assistant", "content": None, "tool_calls": [bad]},
                                  {"role": "tool", "tool_call_id": "call_1", "content": "x"}])
        assert (error.param, error.code) == (param, "unknown_parameter")
