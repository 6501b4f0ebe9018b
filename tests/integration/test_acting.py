"""Issue 15: an expert's question in the tool loop, against the simulator as its LLM: the loop
runs the reply's other calls, stops with everything needed to go on, and a fresh loop (as on
another agent) goes on with the answer in the question's place, each call answered once."""

import pytest

from aether_contracts.state import Usage
from aether_core.llm import LLMClient, LLMConfig, aether_headers
from aether_core.prompting import new_nonce
from aether_core.sandbox import SandboxLimits, Unavailable
from aether_executor.acting import Acting, ActLimits, Asked
from aether_executor.tools import Toolbox

PROMPT = [
    {"role": "system", "content": "You are an expert."},
    {"role": "user", "content": "<task>\nT\n</task>\n\nYour subtask (s1): build it [[sim ask=busy]]"},
]


def acting(simulator, root, steps: list) -> Acting:
    async def publish(step) -> None:
        steps.append(step)

    return Acting(
        LLMClient(LLMConfig(base_url=simulator.base_url, api_key="test")),
        {"model": "m", "headers": aether_headers("expert", "task-asks", "s1", "fullstack")},
        Toolbox(root, Unavailable("no sandbox in this test"), SandboxLimits()),
        publish, ActLimits(), task_id="task-asks", subtask_id="s1", attempt=1, max_tokens=2000,
        token_budget=None, spent_before=0, usage=Usage(), nonce=new_nonce(),
    )


async def test_a_question_amid_other_calls_pauses_after_them_and_resumes_with_the_answer_in_its_place(simulator, tmp_path):
    steps: list = []
    with pytest.raises(Asked) as asked:
        await acting(simulator, tmp_path, steps).run(list(PROMPT))
    paused = asked.value.paused
    assert paused.question == "Question 1 from s1: which database should it use, PostgreSQL or SQLite?"
    [assistant] = [m for m in paused.messages if m["role"] == "assistant"]
    calls = [c["id"] for c in assistant["tool_calls"]]
    replies = [m for m in paused.messages if m["role"] == "tool"]
    # The other calls ran (the second question is a tool error the model reads); the answer's
    # place is kept where its call was.
    assert [m["tool_call_id"] for m in replies] == [calls[0], calls[2], calls[3]]
    assert paused.answer_at == paused.messages.index(replies[0]) + 1
    assert "one question at a time" in replies[1]["content"] and "notes/s1.md" in replies[2]["content"]
    assert (tmp_path / "notes" / "s1.md").read_text() == "written before the question\n"
    assert [(s.tool, s.ok) for s in steps] == [("write_file", True), ("ask_user", True), ("ask_user", False), ("list_files", True)]
    assert paused.steps == 4 and paused.tool_errors == 1 and paused.usage.calls == 1

    # A loop of its own, as on another agent, from the stored conversation alone.
    again: list = []
    acted = await acting(simulator, tmp_path, again).resume(paused.model_validate_json(paused.to_bytes()), "SQLite")
    assert "asked and was told:" in acted.text and "SQLite" in acted.text and acted.steps == 4
    [request] = [r for r in simulator.requests(task_id="task-asks") if len(r["messages"]) > len(PROMPT) + 1]
    sent = [m for m in request["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in sent] == calls, "every call answered once, in its order"
    assert "SQLite" in sent[1]["content"] and sent[1]["content"].startswith("The person answered")
