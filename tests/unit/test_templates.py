import json

import pytest

from aether_core.templates import BUILTIN_TEMPLATES, TemplateError, load_registry, match_template

SEED_TYPES = ["python-backend", "react-frontend", "database-expert", "devops-expert", "fullstack", "testing-expert"]


def test_the_six_seed_templates_exist_in_order():
    registry = load_registry()
    assert registry.agent_types == SEED_TYPES
    for template in registry.templates.values():
        assert template.name and template.description and template.system_prompt and template.tags
    assert registry.master("jason") is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Create SQLAlchemy models and a postgres migration", "database-expert"),
        ("FastAPI endpoints for CRUD on users", "python-backend"),
        ("A React page with Tailwind and a form", "react-frontend"),
        ("Dockerfile and a Kubernetes deployment with a CI pipeline", "devops-expert"),
        ("pytest unit tests with coverage", "testing-expert"),
        ("something entirely vague", "fullstack"),
    ],
)
def test_keyword_matching(text, expected):
    assert match_template(text, BUILTIN_TEMPLATES) == expected


def test_custom_templates_and_masters_load_from_a_directory(tmp_path):
    (tmp_path / "rust.yaml").write_text(
        "type: rust-backend\nname: Rust Backend Expert\ndescription: Axum and Tokio\n"
        "tags: [rust, axum]\nsystem_prompt: You write Rust.\n"
    )
    (tmp_path / "ada.json").write_text(json.dumps({
        "kind": "master", "id": "ada", "name": "Ada", "model": "big-model",
    }))
    (tmp_path / "README.txt").write_text("ignored")
    registry = load_registry(tmp_path)
    assert "rust-backend" in registry.agent_types
    assert registry.match("an axum service in rust") == "rust-backend"
    ada = registry.master("ada")
    assert ada is not None and ada.model == "big-model" and "{agent_types}" in ada.planning_prompt


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("type: Bad Type\nname: x\ndescription: x\nsystem_prompt: x\n", "must match"),
        ("type: ok\nname: x\nsystem_prompt: x\n", "'description' must be a non-empty string"),
        ("type: ok\nname: x\ndescription: x\nsystem_prompt: x\ntags: rust\n", "'tags' must be a list"),
        ("- a list\n", "expected a mapping"),
        ("kind: robot\n", "kind must be"),
        ("type: [unclosed\n", "cannot be read"),
    ],
)
def test_bad_custom_templates_fail_loudly(tmp_path, content, error):
    (tmp_path / "bad.yaml").write_text(content)
    with pytest.raises(TemplateError, match=error.replace("[", r"\[")):
        load_registry(tmp_path)


def test_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(TemplateError, match="does not exist"):
        load_registry(tmp_path / "nope")
