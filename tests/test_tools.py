"""Tool calling and structured output: the parsers per format family (whole and streamed at every split),
invalid calls kept with their error, the byte budget, tool_choice, and ChatMetaLM against the local
server over both protocols (the demo stand-in answers in the Hermes format and honours vLLM's
structured outputs)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from Xclient.client import ModelConfig
from Xclient.exceptions import XclientValueError
from Xclient.llms import ChatMetaLM
from Xclient.llms._backends import Guide, Sampling, TrtllmBackend
from Xclient.llms._tools import (
    HERMES,
    INTERNLM2,
    LLAMA3,
    CallPiece,
    ToolCallParser,
    schema_errors,
    tool_choice_name,
)

QWEN = "Qwen2-0.5B-Instruct"


def _ids() -> Any:
    counter = iter(range(1000))
    return lambda: f"call_{next(counter)}"


def parse(tool_format, parts, **options) -> tuple[str, list[CallPiece]]:
    """(content, pieces) after feeding ``parts`` one by one."""
    parser = ToolCallParser(tool_format, new_id=_ids(), **options)
    events = [event for part in parts for event in parser.feed(part)] + parser.finish()
    return "".join(e for e in events if isinstance(e, str)), [e for e in events if isinstance(e, CallPiece)]


HERMES_ANSWER = (
    "我来查一下。<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
)


def test_hermes_calls_parse_the_same_whatever_the_stream_split_and_never_reach_the_content():
    whole = parse(HERMES, [HERMES_ANSWER])
    assert whole[0] == "我来查一下。\n"
    assert [(p.name, json.loads(p.args)) for p in whole[1]] == [
        ("get_weather", {"city": "北京"}),
        ("add", {"a": 2, "b": 3}),
    ]
    assert [p.index for p in whole[1]] == [0, 1] and all(p.error is None for p in whole[1])
    for cut in range(1, len(HERMES_ANSWER)):
        assert parse(HERMES, [HERMES_ANSWER[:cut], HERMES_ANSWER[cut:]]) == whole
    content, pieces = parse(HERMES, list(HERMES_ANSWER))  # one character per delta
    assert (content, pieces) == whole


def test_text_outside_a_call_streams_at_once_and_only_a_possible_tag_start_is_held_back():
    parser = ToolCallParser(HERMES)
    assert parser.feed("北京晴") == ["北京晴"]
    assert parser.feed("，<tool") == ["，"]  # "<tool" may begin <tool_call>
    assert parser.feed("s> 不是调用") == ["<tools> 不是调用"]
    assert parser.finish() == []


def test_a_call_that_does_not_parse_is_an_invalid_call_with_its_error_and_raw_text():
    content, pieces = parse(
        HERMES, ['前<tool_call>\n{"name": "get_weather", "arguments": {"city": 北京}}\n</tool_call>后']
    )
    assert content == "前后"
    (piece,) = pieces
    assert piece.name == "get_weather" and piece.error and "not JSON" in piece.error
    assert piece.args == '\n{"name": "get_weather", "arguments": {"city": 北京}}\n'
    _, (unclosed,) = parse(HERMES, ['<tool_call>\n{"name": "f", "arguments": {"a": '])
    assert unclosed.error and "unterminated <tool_call>" in unclosed.error and unclosed.args.endswith('{"a": ')


def test_a_call_that_never_closes_is_given_up_at_the_byte_budget_and_nothing_is_lost():
    body = '\n{"name": "write", "arguments": {"text": "' + "长" * 200
    parser = ToolCallParser(HERMES, max_call_bytes=100, new_id=_ids())
    events = parser.feed("<tool_call>" + body[:60])
    assert events == []  # under the budget: held
    events = parser.feed(body[60:])
    assert len(events) == 1 and isinstance(events[0], CallPiece) and "longer than 100 bytes" in events[0].error
    more = parser.feed("尾巴" * 50 + "</tool_call>之后")
    tail = parser.finish()
    pieces = [e for e in [*events, *more, *tail] if isinstance(e, CallPiece)]
    assert {p.index for p in pieces} == {0} and pieces[0].id and all(p.id is None for p in pieces[1:])
    assert "".join(p.args for p in pieces) == body + "尾巴" * 50
    assert [e for e in [*more, *tail] if isinstance(e, str)] == ["之后"]


def test_internlm2_calls_cut_off_by_the_action_end_stop_word_still_parse():
    content, (piece,) = parse(INTERNLM2, ['好的。<|action_start|><|plugin|>\n{"name": "add", "parameters": {"a": 1}}'])
    assert content == "好的。" and piece.name == "add" and json.loads(piece.args) == {"a": 1}
    _, (closed,) = parse(INTERNLM2, ['<|action_start|><|plugin|>\n{"name": "f", "arguments": {}}<|action_end|>'])
    assert closed.name == "f" and closed.error is None


def test_llama3_answers_are_calls_when_they_are_json_and_text_streams_otherwise():
    answer = (
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "北京"}}; {"name": "add", "parameters": {"a": 2}}'
    )
    for cut in range(1, len(answer)):
        content, pieces = parse(LLAMA3, [answer[:cut], answer[cut:]])
        assert content == "" and [p.name for p in pieces] == ["get_weather", "add"]
    parser = ToolCallParser(LLAMA3)
    assert parser.feed("  ") == [] and parser.feed("北京今天晴。") == ["  北京今天晴。"]
    assert parser.feed(' {"name": "x"}') == [' {"name": "x"}']  # after text, JSON is text


def test_a_forced_call_starts_inside_the_prefill_the_prompt_ended_with():
    prefill = HERMES.prefill("get_weather")
    assert prefill == '<tool_call>\n{"name": "get_weather", "arguments": '
    content, (piece,) = parse(HERMES, ['{"city": "上海"}}\n</tool_call>'], prefill=prefill)
    assert content == "" and piece.name == "get_weather" and json.loads(piece.args) == {"city": "上海"}
    assert HERMES.prefill("required") == "<tool_call>\n" and HERMES.prefill("auto") == ""
    assert LLAMA3.prefill("required") == '{"name": "'
    _, (forced,) = parse(LLAMA3, ['add", "parameters": {"a": 1}}'], prefill=LLAMA3.prefill("required"))
    assert forced.name == "add"


def test_tool_choice_forms_and_bad_choices_name_what_is_accepted():
    names = ["get_weather", "add"]
    assert [tool_choice_name(c, names) for c in (None, "auto", "none", "any", "required", True, "add")] == [
        "auto",
        "auto",
        "none",
        "required",
        "required",
        "required",
        "add",
    ]
    assert tool_choice_name(True, ["add"]) == "add"
    assert tool_choice_name({"type": "function", "function": {"name": "add"}}, names) == "add"
    with pytest.raises(XclientValueError, match="'get_weather', 'add'.*got 'search'"):
        tool_choice_name("search", names)


def test_schema_errors_follow_refs_and_say_where():
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
        "required": ["items"],
        "$defs": {"Item": {"type": "object", "properties": {"数量": {"type": "integer"}}, "required": ["数量"]}},
    }
    assert schema_errors({"items": [{"数量": 1}]}, schema) == []
    assert schema_errors({"items": [{"数量": "一"}, {}]}, schema) == [
        "$.items[0].数量: expected integer, got str",
        "$.items[1]: missing required property '数量'",
    ]


def test_tensorrt_llm_guided_decoding_inputs_are_sent_when_the_model_declares_them():
    def config(*extra: str) -> ModelConfig:
        inputs = [("text_input", "STRING"), ("max_tokens", "INT32")] + [(name, "STRING") for name in extra]
        return ModelConfig.from_dict(
            {
                "name": "ensemble",
                "max_batch_size": 8,
                "input": [{"name": n, "data_type": f"TYPE_{t}", "dims": [1]} for n, t in inputs],
                "output": [{"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]}],
            }
        )

    schema = {"type": "object", "properties": {"答案": {"type": "integer"}}}
    sampling = Sampling(max_tokens=8, guide=Guide(schema))
    guided = TrtllmBackend(config("guided_decoding_guide_type", "guided_decoding_guide")).request(
        "问", sampling, stream=False
    )
    assert guided.inputs["guided_decoding_guide_type"].tolist() == [b"json_schema"]
    assert json.loads(guided.inputs["guided_decoding_guide"][0].decode()) == schema
    any_json = TrtllmBackend(config("guided_decoding_guide_type")).request(
        "问", Sampling(8, guide=Guide(None)), stream=False
    )
    assert any_json.inputs["guided_decoding_guide_type"].tolist() == [b"json"]
    plain = TrtllmBackend(config()).request("问", sampling, stream=False)
    assert not {"guided_decoding_guide_type", "guided_decoding_guide"} & set(plain.inputs)


# -- against the local server -------------------------------------------------------------------------


@tool
def get_weather(city: str) -> str:
    """查询一个城市今天的天气。"""
    return f"{city}：晴，25度"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Weather(BaseModel):
    """一个城市的天气。"""

    city: str = Field(description="城市名")
    temperature: int = Field(description="摄氏度")


def _sampling(request: Any) -> dict[str, Any]:
    return json.loads(request.inputs["sampling_parameters"][0])


QUESTION = "请用 get_weather 查询“北京”的天气。"


def test_a_streamed_tool_call_comes_as_tool_call_chunks_and_matches_invoke(url):
    llm = ChatMetaLM(model=QWEN, server_url=url, temperature=0).bind_tools([get_weather, add])
    message = llm.invoke(QUESTION)
    assert message.content == "" and message.invalid_tool_calls == []
    (call,) = message.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", {"city": "北京"}) and call["id"].startswith("call_")
    assert message.response_metadata["finish_reason"] == "tool_calls"
    chunks = list(llm.stream(QUESTION))
    assert all(isinstance(c, AIMessageChunk) and c.content == "" for c in chunks)  # no call text leaks
    assert sum(bool(c.tool_call_chunks) for c in chunks) == 1
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("get_weather", {"city": "北京"})]
    assert chunks[-1].response_metadata["finish_reason"] == "tool_calls"


async def test_async_stream_and_invoke_parse_tool_calls_alike(url):
    llm = ChatMetaLM(model=QWEN, server_url=url).bind_tools([get_weather, add], tool_choice="add")
    message = await llm.ainvoke("算一下 20 加 22")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("add", {"a": 20, "b": 22})]
    chunks = [chunk async for chunk in llm.astream("算一下 20 加 22")]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.content == "" and [c["args"] for c in merged.tool_calls] == [{"a": 20, "b": 22}]


def test_tool_results_come_back_into_the_prompt_and_the_answer_uses_them(url, sent):
    llm = ChatMetaLM(model=QWEN, server_url=url).bind_tools([get_weather])
    first = llm.invoke([HumanMessage(QUESTION)])
    result = get_weather.invoke(first.tool_calls[0])
    assert isinstance(result, ToolMessage)
    final = llm.invoke([HumanMessage(QUESTION), first, result])
    assert final.tool_calls == [] and "北京：晴，25度" in final.content
    prompt = sent[-1][0].prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>' in prompt
    assert "<|im_start|>user\n<tool_response>\n北京：晴，25度\n</tool_response><|im_end|>" in prompt


def test_tool_choice_none_offers_no_tools_and_any_forces_a_call(url, sent):
    llm = ChatMetaLM(model=QWEN, server_url=url)
    plain = llm.bind_tools([get_weather], tool_choice="none").invoke(QUESTION)
    assert plain.tool_calls == [] and "<tools>" not in sent[-1][0].prompt and plain.content
    forced = llm.bind_tools([get_weather, add], tool_choice="any").invoke("你好！")
    assert [c["name"] for c in forced.tool_calls] == ["get_weather"]
    assert sent[-1][0].prompt.endswith("<|im_start|>assistant\n<tool_call>\n")
    with pytest.raises(XclientValueError, match="tool_choice"):
        llm.bind_tools([get_weather], tool_choice="search")
    with pytest.raises(XclientValueError, match=r"tools\[0\]"):
        llm.bind_tools([42])


def test_json_schema_output_uses_vllms_structured_outputs_and_is_validated(url, sent):
    llm = ChatMetaLM(model=QWEN, server_url=url)
    weather = llm.with_structured_output(Weather, method="json_schema").invoke("北京今天 25 度，“北京”天气如何？")
    assert weather == Weather(city="北京", temperature=25)
    guide = json.loads(_sampling(sent[-1][1])["structured_outputs"])
    assert guide == {"json": Weather.model_json_schema()}
    old = llm.model_copy(update={"structured_output_key": "guided_decoding"})
    as_dict = old.with_structured_output(Weather.model_json_schema(), method="json_mode").invoke("“上海” 30 度")
    assert as_dict == {"city": "上海", "temperature": 30}
    assert "guided_decoding" in _sampling(sent[-1][1]) and "structured_outputs" not in _sampling(sent[-1][1])


def test_without_constrained_decoding_an_invalid_answer_raises_with_the_raw_text(url):
    llm = ChatMetaLM(model=QWEN, server_url=url, structured_output_key=None)
    with pytest.raises(OutputParserException) as caught:
        llm.with_structured_output(Weather.model_json_schema(), method="json_schema").invoke("北京天气如何？")
    assert "演示替身" in caught.value.llm_output  # the stand-in's plain answer, kept
    raw = llm.with_structured_output(Weather, method="json_schema", include_raw=True).invoke("北京天气如何？")
    assert raw["parsed"] is None and isinstance(raw["parsing_error"], OutputParserException)
    assert isinstance(raw["raw"], AIMessage) and "演示替身" in raw["raw"].content


def test_function_calling_output_with_include_raw_returns_the_message_and_the_instance(url):
    llm = ChatMetaLM(model=QWEN, server_url=url)
    out = llm.with_structured_output(Weather, include_raw=True).invoke("“广州” 31 度")
    assert out["parsed"] == Weather(city="广州", temperature=31) and out["parsing_error"] is None
    assert out["raw"].tool_calls[0]["name"] == "Weather"
    streamed = list(llm.with_structured_output(Weather).stream("“广州” 31 度"))
    assert streamed[-1] == Weather(city="广州", temperature=31)


def test_the_llama3_and_internlm2_templates_parse_their_own_formats_end_to_end(url, sent):
    for template, opening in (("llama3", '{"name": "'), ("internlm2", "<|action_start|><|plugin|>\n")):
        llm = ChatMetaLM(model=QWEN, server_url=url, chat_template=template, max_tokens=8)
        message = llm.bind_tools([get_weather], tool_choice="any").invoke(QUESTION)
        assert sent[-1][0].prompt.endswith(opening)
        # The stand-in only speaks Hermes: its answer is not a call in these formats, and it is kept.
        assert message.tool_calls == [] and len(message.invalid_tool_calls) == 1
        assert message.invalid_tool_calls[0]["error"] and message.invalid_tool_calls[0]["args"]


@pytest.mark.slow
# langgraph 1.x moved the prebuilt agent to langchain.agents.create_agent (the `langchain` package, not
# a dependency); langgraph's own create_react_agent still runs the same ReAct graph.
@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_a_langgraph_react_agent_runs_two_tools_and_answers_in_chinese(url):
    from langgraph.prebuilt import create_react_agent

    agent = create_react_agent(ChatMetaLM(model=QWEN, server_url=url), [get_weather, add])
    state = agent.invoke(
        {"messages": [("user", "请先用 get_weather 查询“北京”的天气，再用 add 计算 2 加 3。")]},
        {"recursion_limit": 10},
    )
    messages = state["messages"]
    tools_run = [m for m in messages if isinstance(m, ToolMessage)]
    assert [(m.name, m.content) for m in tools_run] == [("get_weather", "北京：晴，25度"), ("add", "5")]
    final = messages[-1]
    assert isinstance(final, AIMessage) and final.tool_calls == []
    assert "北京：晴，25度" in final.content and "5" in final.content


def test_with_tools_bound_a_plain_answer_still_ends_before_a_client_side_stop_sequence(url):
    llm = ChatMetaLM(model=QWEN, server_url=url, stop=["。"]).bind_tools([get_weather])
    message = llm.invoke("你好")  # names no tool: the stand-in answers in text
    assert message.tool_calls == [] and message.content and "。" not in message.content
    streamed = "".join(chunk.content for chunk in llm.stream("你好"))
    assert streamed == message.content


def test_a_jinja_chat_template_file_renders_the_tools_and_its_calls_parse(url, sent):
    template = pathlib.Path(__file__).parent / "fixtures" / "templates" / "qwen2.5-instruct.jinja"
    llm = ChatMetaLM(model=QWEN, server_url=url, chat_template=str(template)).bind_tools([get_weather])
    message = llm.invoke(QUESTION)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "北京"})]
    assert sent[-1][0].prompt.startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools"
    )
