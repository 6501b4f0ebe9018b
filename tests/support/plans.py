"""Scripted plans for the LLM simulator (`SIM-PLAN:` lines in a task description)."""

import json


def subtask(id: str, agent_type: str = "python-backend", deps=(), sim: str = "", text: str | None = None) -> dict:
    description = text or f"Build part {id}"
    if sim:
        description += f" [[sim {sim}]]"
    return {"id": id, "description": description, "agent_type": agent_type, "depends_on": list(deps)}


def scripted(title: str, subtasks: list[dict], analysis: str = "scripted plan") -> str:
    plan = {"analysis": analysis, "subtasks": subtasks}
    return f"{title}\nSIM-PLAN: {json.dumps(plan)}"
