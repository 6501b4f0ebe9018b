"""A plan's validation: Jason's plans (lenient where a model is sloppy, repairs said aloud) and
plans a person edited before approving them (strict: nothing is mapped, every problem is named).

Shared by the planner (Jason's plans) and the gateway (an approval with an edited plan, issue
15), so both refuse the same things for the same reasons. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from aether_contracts.state import PlanRecord, Subtask

from . import dag
from .templates import Registry

SUBTASK_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_DESCRIPTION_CHARS = 4000


class PlanError(ValueError):
    """The plan is unusable; the message says why, for a person and for the repair prompt, and
    `problems` lists every reason found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]



MAX_CHECKS = 5
MAX_CHECK_CHARS = 500


@dataclass
class PlannedSubtask:
    id: str
    description: str
    agent_type: str
    depends_on: list[str] = field(default_factory=list)
    verify: list[str] = field(default_factory=list)
    """Commands that must pass for the subtask to be completed (run by Aether in the sandbox)."""
    problems: list[str] = field(default_factory=list, compare=False)
    """Strict reading: what is wrong with it that did not stop the reading (its agent type)."""

    def as_dict(self) -> dict[str, Any]:
        planned: dict[str, Any] = {
            "id": self.id,
            "description": self.description,
            "agent_type": self.agent_type,
            "depends_on": list(self.depends_on),
        }
        if self.verify:
            planned["verify"] = list(self.verify)
        return planned


@dataclass
class Plan:
    analysis: str
    subtasks: list[PlannedSubtask]
    notes: list[str] = field(default_factory=list)
    """Visible repairs applied while parsing (e.g. an unknown agent type mapped to a known one)."""

    def as_dict(self) -> dict[str, Any]:
        return {"analysis": self.analysis, "subtasks": [s.as_dict() for s in self.subtasks]}

    def record(self) -> PlanRecord:
        """The plan as the task state keeps it."""
        return PlanRecord.model_validate(self.as_dict())

    def subtask_states(self) -> list[Subtask]:
        """The plan's subtasks as a task state holds them, none started."""
        return [
            Subtask(id=s.id, description=s.description, agent_type=s.agent_type,
                    depends_on=list(s.depends_on), verify=list(s.verify))
            for s in self.subtasks
        ]



_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def _load_json(text: str, notes: list[str]) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as strict:
        try:
            # Raw newlines and tabs inside strings (models write them, structured output too).
            value = json.loads(text, strict=False)
        except json.JSONDecodeError:
            pass
        else:
            notes.append("the plan's strings held raw control characters (newlines, tabs); they were read as text")
            return value
        first = strict
        fenced = _FENCE.match(text)
        if fenced:
            try:
                value = json.loads(fenced.group(1), strict=False)
            except json.JSONDecodeError:
                pass
            else:
                notes.append("the plan came wrapped in a Markdown code fence; the fence was removed")
                return value
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            try:
                value = json.loads(text[start : end + 1], strict=False)
            except json.JSONDecodeError:
                pass
            else:
                notes.append("the plan came with text around the JSON object; the text was dropped")
                return value
        raise PlanError(
            f"the reply is not valid JSON ({first.msg} at line {first.lineno}, column {first.colno})"
        ) from first


def _as_id(value: Any, where: str, notes: list[str]) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PlanError(f"{where}: 'id' must be a string, got {type(value).__name__}")
    if isinstance(value, int):
        notes.append(f"{where}: numeric id {value} was read as the string '{value}'")
        value = str(value)
    value = value.strip()
    if not SUBTASK_ID_PATTERN.match(value):
        raise PlanError(
            f"{where}: id {value!r} must be 1-64 characters of letters, digits, '.', '_' or '-'"
        )
    return value


PLAN_KEYS = frozenset({"analysis", "subtasks"})
SUBTASK_KEYS = frozenset({"id", "description", "agent_type", "depends_on", "verify"})


def parse_plan(text: str | dict[str, Any], registry: Registry, max_subtasks: int, *, strict: bool = False) -> Plan:
    """Validate a plan (an LLM's reply, or a JSON object); raise `PlanError` with every reason
    found, or return it. `strict`, for a plan a person wrote: nothing is guessed (an unknown or
    missing agent type, an unknown field, a cycle are reasons like the others, all collected)."""
    notes: list[str] = []
    data = text if isinstance(text, dict) else _load_json(text, notes)
    if not isinstance(data, dict):
        raise PlanError(f"the plan must be a JSON object, got {type(data).__name__}")
    problems: list[str] = []
    if strict and (unknown := sorted(set(data) - PLAN_KEYS)):
        problems.append(f"the plan has unknown field(s) {', '.join(repr(k) for k in unknown)}; it has 'analysis' and 'subtasks'")
    raw_subtasks = data.get("subtasks")
    if not isinstance(raw_subtasks, list):
        raise PlanError("; ".join([*problems, "the plan needs a 'subtasks' list"]), [*problems, "the plan needs a 'subtasks' list"])
    if not raw_subtasks:
        raise PlanError("; ".join([*problems, "the plan has no subtasks"]), [*problems, "the plan has no subtasks"])
    if len(raw_subtasks) > max_subtasks:
        too_many = f"the plan has {len(raw_subtasks)} subtasks; at most {max_subtasks} are allowed"
        if not strict:
            raise PlanError(too_many)
        problems.append(too_many)
    analysis = data.get("analysis", "")
    if not isinstance(analysis, str):
        if strict:
            problems.append("'analysis' must be a string")
        notes.append("'analysis' was not a string and was converted to one")
        analysis = json.dumps(analysis)

    subtasks: list[PlannedSubtask] = []
    seen: set[str] = set()
    # Every problem is collected, so one repair (or one edit) can fix them all.
    for index, raw in enumerate(raw_subtasks, 1):
        try:
            planned = _parse_subtask(raw, index, seen, registry, notes, strict)
        except PlanError as problem:
            problems.extend(problem.problems)
        else:
            problems.extend(planned.problems)
            subtasks.append(planned)

    for subtask in subtasks:
        missing = [d for d in subtask.depends_on if d not in seen]
        if missing:
            problems.append(
                f"subtask '{subtask.id}' depends on {', '.join(repr(m) for m in missing)}, "
                "which the plan does not contain"
            )
    if problems and not strict:
        raise PlanError("; ".join(problems), problems)
    cycle = find_cycle(subtasks)
    if cycle:
        problems.append(f"the dependencies form a cycle: {' -> '.join(cycle)}")
    if problems:
        raise PlanError("; ".join(problems), problems)
    return Plan(analysis=analysis.strip(), subtasks=subtasks, notes=notes)


def _parse_subtask(
    raw: Any, index: int, seen: set[str], registry: Registry, notes: list[str], strict: bool = False
) -> PlannedSubtask:
    where = f"subtask #{index}"
    if not isinstance(raw, dict):
        raise PlanError(f"{where} must be an object, got {type(raw).__name__}")
    if "id" not in raw:
        raise PlanError(f"{where} has no 'id'")
    subtask_id = _as_id(raw["id"], where, notes)
    where = f"subtask '{subtask_id}'"
    if subtask_id in seen:
        raise PlanError(f"the id '{subtask_id}' is used by more than one subtask")
    seen.add(subtask_id)
    found: list[str] = []
    """Strict: reasons that do not stop the reading of the rest of the subtask."""
    if strict and (unknown := sorted(set(raw) - SUBTASK_KEYS)):
        found.append(
            f"{where} has unknown field(s) {', '.join(repr(k) for k in unknown)}; "
            f"a subtask has {', '.join(sorted(SUBTASK_KEYS))}"
        )
    try:
        planned = _read_subtask(raw, subtask_id, where, registry, notes, strict, found)
    except PlanError as stop:
        raise PlanError("; ".join([*found, *stop.problems]), [*found, *stop.problems]) from None
    if found:
        # Read whole: its dependencies are checked too, and the cycles they make.
        planned.problems = found
    return planned


def _read_subtask(
    raw: dict[str, Any], subtask_id: str, where: str, registry: Registry, notes: list[str], strict: bool, found: list[str]
) -> PlannedSubtask:
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise PlanError(f"{where} needs a non-empty 'description'")
    description = description.strip()
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise PlanError(
            f"{where}: the description has {len(description)} characters; "
            f"at most {MAX_DESCRIPTION_CHARS} are allowed"
        )

    agent_type = raw.get("agent_type")
    if strict and (not isinstance(agent_type, str) or registry.template(agent_type.strip()) is None):
        found.append(f"{where}: unknown agent type {agent_type!r}; known: {', '.join(sorted(registry.agent_types))}")
    if not isinstance(agent_type, str) or not agent_type.strip():
        mapped = registry.match(description)
        notes.append(f"{where} had no agent_type; keyword matching chose '{mapped}'")
        agent_type = mapped
    agent_type = agent_type.strip()
    if registry.template(agent_type) is None:
        mapped = registry.match(f"{agent_type} {agent_type} {description}")
        notes.append(f"{where}: unknown agent type '{agent_type}' was mapped to '{mapped}'")
        agent_type = mapped

    raw_deps = raw.get("depends_on", [])
    if raw_deps is None:
        raw_deps = []
    if isinstance(raw_deps, str | int) and not isinstance(raw_deps, bool):
        notes.append(f"{where}: depends_on was a single value and was read as a list")
        raw_deps = [raw_deps]
    if not isinstance(raw_deps, list):
        raise PlanError(f"{where}: 'depends_on' must be a list of subtask ids")
    depends_on: list[str] = []
    for dep in raw_deps:
        dep_id = _as_id(dep, f"{where} depends_on", notes)
        if dep_id == subtask_id:
            raise PlanError(f"{where} depends on itself")
        if dep_id not in depends_on:
            depends_on.append(dep_id)
    return PlannedSubtask(subtask_id, description, agent_type, depends_on, _checks(raw.get("verify"), where, notes))


def _checks(raw: Any, where: str, notes: list[str]) -> list[str]:
    """The subtask's checks: shell commands, at most `MAX_CHECKS` of `MAX_CHECK_CHARS` each."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        notes.append(f"{where}: verify was a single command and was read as a list")
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise PlanError(f"{where}: 'verify' must be a list of shell commands")
    checks = [c.strip() for c in raw if c.strip()]
    if len(checks) > MAX_CHECKS:
        raise PlanError(f"{where}: {len(checks)} checks; at most {MAX_CHECKS} are allowed")
    for check in checks:
        if len(check) > MAX_CHECK_CHARS:
            raise PlanError(f"{where}: a check of {len(check)} characters; at most {MAX_CHECK_CHARS} are allowed")
    return checks


def find_cycle(subtasks: list[PlannedSubtask]) -> list[str] | None:
    """A cycle of the plan's dependencies as the path that closes it (see `dag.find_cycle`), or None."""
    return dag.find_cycle(dag.graph(subtasks))
