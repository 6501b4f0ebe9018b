import re
from pathlib import Path

from tests.support.settings import env_names, service_settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
DEVSTACK = (Path(__file__).resolve().parents[2] / "tools/devstack/aether_devstack/__main__.py").read_text()
SIMULATOR = (Path(__file__).resolve().parents[2] / "tools/simulator/aether_simulator/__main__.py").read_text()


def test_every_setting_a_service_reads_is_documented_in_the_readme():
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", README, re.MULTILINE))
    for service, settings in service_settings().items():
        missing = env_names(settings) - documented
        assert not missing, f"{service} reads {sorted(missing)}, which the README does not document"


def test_every_variable_devstack_and_the_simulator_read_is_documented():
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", README, re.MULTILINE))
    read = set(re.findall(r"""env\(\s*["'](AETHER_[A-Z0-9_]+)["']""", DEVSTACK + SIMULATOR))
    read |= set(re.findall(r"""os\.environ\.get\(["'](AETHER_[A-Z0-9_]+)["']""", DEVSTACK))
    assert read, "the pattern found nothing: the check would pass vacuously"
    assert not read - documented, sorted(read - documented)


def test_the_readme_opens_with_the_two_commands():
    head = README[:2500]
    assert "make up" in head and "make test" in head


def test_the_readmes_subject_table_is_the_one_the_grants_and_consumers_give():
    """Issue 17: the table of subjects is rendered from `permissions.grants` and the consumers,
    so it cannot miss a subject (it once lacked the replan, deadline and control subjects and
    named only the planner as publishing `plan.ready`)."""
    from aether_contracts import subjects
    from aether_devstack.subjects_table import readme_section, render, rows, shown

    assert readme_section(README) == render(), "stale: run `.venv/bin/python -m aether_devstack subjects --write`"
    listed = {subject for subject, *_ in rows()}
    constants = {v for k, v in vars(subjects).items() if k.isupper() and isinstance(v, str) and v.startswith("aether.")}
    assert len(constants) > 12
    for constant in map(shown, constants):
        assert any(s == constant or s.startswith(constant + ".") for s in listed), f"{constant} is in no row"
    publishers = {subject: by for subject, _, by, _ in rows()}
    assert publishers[subjects.PLAN_READY] == "gateway, planner, synthesizer"
