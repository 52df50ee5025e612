"""The demo LLM's agent mode: a deterministic stand-in for a model that follows lagent's ReAct protocol.

When a prompt offers tools the way lagent's ``ReActProtocol`` renders them (its English or Chinese call
protocol in a system turn: the tool descriptions, ``Action:`` / ``Action Input:``, ``Final Answer:``):

- and no tool result has come back since the last user turn, the answer calls a tool: the first
  offered tool whose name appears in the user's text, else the first offered tool, with the user's
  text as the value of the tool's first parameter (JSON, as lagent's ``JsonParser`` reads it);
- once a result came back (a ``Response:`` turn), the answer is the final answer, quoting it.

It is a stand-in, like the demo's other answers: it shows that an agent loop runs through Xclient, not
that a model reasons.

>>> prompt = ("<|im_start|>system\\nYou are a assistant who can utilize external tools.\\n"
...           "[{'name': 'adder', 'description': 'adds', 'parameters': [{'name': 'query', 'type': 'STRING'}]}]\\n"
...           "Action:the tool name, should be one of [adder]\\nFinal Answer:final answer<|im_end|>\\n"
...           "<|im_start|>user\\n3 加 4<|im_end|>\\n<|im_start|>assistant\\n")
>>> print(agent_answer(prompt))
Thought: 我需要用工具 adder 来回答。
Action: adder
Action Input: {"query": "3 加 4"}
<BLANKLINE>
"""

from __future__ import annotations

import json
import re

_PROTOCOLS = ("who can utilize external tools", "可以调用外部工具的助手")
_NAMES = re.compile(r"(?:should be one of|必须从) \[(\[?[^\]]*\]?)\]")
_CJK = re.compile(r"[\u3400-\u9fff]")
_RESPONSE = "Response:"


def agent_answer(prompt: str) -> str | None:
    """The agent-mode answer to a ChatML prompt, or None when the prompt offers no tools."""
    from ._demo_llm import parse_turns

    turns = parse_turns(prompt)
    protocol = next((text for role, text in turns if role == "system" and any(p in text for p in _PROTOCOLS)), None)
    if protocol is None:
        return None
    names_match = _NAMES.search(protocol)
    # lagent prints the names as a Python list inside its own brackets: "[['adder', 'search']]".
    tools = [name.strip().strip("[]'\" ") for name in names_match.group(1).split(",")] if names_match else []
    tools = [name for name in tools if name]
    last_user = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=-1)
    question = turns[last_user][1] if last_user >= 0 else ""
    chinese = bool(_CJK.search(question))
    results = [text for role, text in turns[last_user + 1 :] if role != "assistant" and text.startswith(_RESPONSE)]
    if results:
        result = results[-1][len(_RESPONSE) :].strip()
        if chinese:
            return f"Thought: 工具已经给出了结果。\nFinal Answer: 工具的结果是 {result}。"
        return f"Thought: The tool gave the result.\nFinal Answer: The tool's result is {result}."
    if not tools:
        return "Thought: 没有可用的工具。\nFinal Answer: 我无法回答。" if chinese else "Final Answer: I cannot answer."
    tool = next((name for name in tools if name in question), tools[0])
    parameter = _first_parameter(protocol, tool)
    call = json.dumps({parameter: question}, ensure_ascii=False)
    thought = f"我需要用工具 {tool} 来回答。" if chinese else f"I need the tool {tool}."
    return f"Thought: {thought}\nAction: {tool}\nAction Input: {call}\n"


def _first_parameter(protocol: str, tool: str) -> str:
    """The first parameter of ``tool`` in the tool descriptions (lagent prints them as Python dicts)."""
    start = protocol.find(f"'name': '{tool}'")
    match = re.search(r"'parameters': \[\{'name': '(\w+)'", protocol[start:]) if start >= 0 else None
    return match.group(1) if match else "query"
