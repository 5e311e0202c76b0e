"""Checking a completion's tool chain: call validity against the tool set, replay on the mock
environment against the reference chain, the repository's tool-chain tasks, and user tool files."""

import json
from pathlib import Path

import pytest

from hrm.checks.mock_tools import BUILTIN_TOOLS, Environment
from hrm.checks.tool_chain import BUILTIN, ToolChainResult, check_reference, check_tool_chain, load_tool_set
from hrm.errors import InputError

from tests.factories import REPO

TASKS = REPO / "tasks" / "tool_chains.jsonl"


def chain(*calls):
    return "\n".join(c if isinstance(c, str) else json.dumps({"tool": c[0], "args": c[1]}) for c in calls)


INIT = ("git_init", {"path": "/p"})
README = ("write_file", {"path": "/p/README.md", "content": "# P\n"})
NOTES = ("write_file", {"path": "/p/NOTES.md", "content": "notes\n"})
ADD_ALL = ("git_add", {"repo": "/p", "paths": ["."]})
COMMIT = ("git_commit", {"repo": "/p", "message": "Initial commit"})
FEATURE = ("git_switch", {"repo": "/p", "branch": "feature", "create": True})
REFERENCE = chain(INIT, README, NOTES, ADD_ALL, COMMIT, FEATURE)


def check(*calls, reference=REFERENCE, tools=BUILTIN):
    return check_tool_chain(chain(*calls), reference, tools)


def invalid(index, message):
    return ToolChainResult(False, False, "invalid_call", index, message)


# --- passing

def test_the_reference_chain_itself_passes_blank_lines_and_surrounding_space_ignored():
    assert check_tool_chain("\n  " + REFERENCE.replace("\n", "\n\n") + "  \n", REFERENCE, BUILTIN) == \
        ToolChainResult(True, True, "passed", None, "")


def test_a_different_order_reaching_the_same_end_state_passes():
    result = check(INIT, NOTES, README, ("git_add", {"repo": "/p", "paths": ["README.md", "NOTES.md"]}), COMMIT, FEATURE)
    assert result.status == "passed" and result.execution_success is True


def test_read_only_calls_in_between_do_not_change_the_end_state():
    result = check(INIT, ("git_status", {"repo": "/p"}), README, NOTES, ADD_ALL, COMMIT, ("git_log", {"repo": "/p"}),
                   ("list_dir", {"path": "/p"}), FEATURE)
    assert result.status == "passed"


# --- invalid calls

def test_an_unknown_tool_is_an_invalid_call_with_a_suggestion():
    assert check(INIT, ("git_comit", {"repo": "/p", "message": "x"})) == \
        invalid(1, "unknown tool 'git_comit' (did you mean 'git_commit'?)")


def test_a_missing_required_argument_is_an_invalid_call():
    assert check(INIT, README, ("git_commit", {"repo": "/p"})) == \
        invalid(2, "git_commit: missing required argument 'message'")


def test_an_argument_of_the_wrong_type_is_an_invalid_call():
    assert check(("git_init", {"path": 7})) == invalid(0, "git_init: argument path must be string, got integer")
    assert check(INIT, ("git_add", {"repo": "/p", "paths": "README.md"})) == \
        invalid(1, "git_add: argument paths must be array, got string")
    assert check(INIT, ("git_add", {"repo": "/p", "paths": ["a", 1]})) == \
        invalid(1, "git_add: argument paths[1] must be string, got integer")
    assert check(("scale", {"environment": "prod", "replicas": True})) == \
        invalid(0, "scale: argument replicas must be integer, got boolean")


def test_an_unknown_argument_is_an_invalid_call():
    assert check(INIT, ("git_commit", {"repo": "/p", "message": "x", "author": "me"})) == \
        invalid(1, "git_commit: unknown argument 'author'")


def test_a_value_outside_the_schema_is_an_invalid_call():
    result = check(("scale", {"environment": "prod", "replicas": -1}))
    assert result.first_failing_call == 0 and result.message.startswith("scale: argument replicas: -1 is less than")


@pytest.mark.parametrize("line,message", [
    ('{"tool": "git_init", "args": {"path": "/p"}', "not JSON: Expecting ',' delimiter at column 44"),
    ("git_init /p", "not JSON: Expecting value at column 1"),
    ('["git_init", {}]', "not a JSON object but array"),
    ('{"tool": "git_init"}', "the call has no 'args' key"),
    ('{"args": {}}', "the call has no 'tool' key"),
    ('{"tool": "git_init", "args": {}, "why": "x"}', "unknown key 'why' (a call holds only \"tool\" and \"args\")"),
    ('{"tool": 3, "args": {}}', "\"tool\" must be a string, got integer"),
    ('{"tool": "git_init", "args": ["/p"]}', "git_init: \"args\" must be an object, got array"),
    ("[" * 100_000, "not JSON: nested too deeply"),
], ids=["truncated", "not-json", "array", "no-args", "no-tool", "extra-key", "tool-not-string", "args-not-object",
        "nested-too-deeply"])
def test_a_line_that_is_not_a_call_object_is_an_invalid_call(line, message):
    assert check(INIT, line) == invalid(1, message)


def test_an_empty_completion_is_invalid():
    assert check_tool_chain(" \n\n", REFERENCE, BUILTIN) == \
        ToolChainResult(False, False, "invalid_call", None, "the completion holds no tool calls")


def test_the_first_invalid_call_is_named_even_when_an_earlier_one_would_fail_to_execute():
    assert check(("git_commit", {"repo": "/p", "message": "x"}), ("nope", {})).first_failing_call == 1


# --- execution failures and wrong end states

def test_a_call_that_cannot_run_on_the_state_is_an_execution_failure_at_that_call():
    assert check(INIT, README, COMMIT) == ToolChainResult(
        True, False, "execution_failed", 2, "git_commit: nothing to commit (nothing staged: git_add first)")
    assert check(INIT, ("git_switch", {"repo": "/p", "branch": "feature"})).message == "git_switch: no branch 'feature'"
    assert check(("docker_build", {"tag": "web"})).message == "docker_build: no Dockerfile at /Dockerfile"


def test_the_same_calls_with_a_different_value_reach_a_wrong_end_state_named_by_its_first_difference():
    result = check(INIT, README, ("write_file", {"path": "/p/NOTES.md", "content": "other\n"}), ADD_ALL, COMMIT, FEATURE)
    assert (result.tool_chain_valid, result.execution_success, result.status, result.first_failing_call) == \
        (True, False, "wrong_end_state", None)
    assert result.message == 'end state differs at files[\'/p/NOTES.md\']: "other\\n" (completion) vs "notes\\n" (reference)'


def test_a_missing_step_reaches_a_wrong_end_state():
    result = check(INIT, README, NOTES, ADD_ALL, COMMIT)
    assert result.status == "wrong_end_state"
    assert result.message == "end state differs at repos['/p']['branches']['feature']: absent (completion) vs " \
        + json.dumps(result_state_of(REFERENCE)["repos"]["/p"]["branches"]["feature"]) + " (reference)"


def result_state_of(text):
    env = Environment()
    for line in text.splitlines():
        call = json.loads(line)
        env.apply(call["tool"], call["args"])
    return env.canonical()


def test_a_long_differing_value_is_cut_to_keep_the_message_one_short_line():
    result = check(INIT, README, ("write_file", {"path": "/p/NOTES.md", "content": "x\n" * 200}), ADD_ALL, COMMIT, FEATURE)
    assert "\n" not in result.message and len(result.message) < 200
    assert '"x\\nx\\n' in result.message and "... (completion)" in result.message


# --- references

def test_a_reference_that_fails_is_refused_as_bad_input_naming_the_call():
    with pytest.raises(InputError, match=r"^reference: call 1: git_commit: nothing to commit"):
        check_tool_chain(chain(INIT), chain(INIT, COMMIT), BUILTIN)
    with pytest.raises(InputError, match=r"^reference: call 0: unknown tool 'nope'"):
        check_reference(chain(("nope", {})), BUILTIN)
    with pytest.raises(InputError, match="no calls"):
        check_reference("", BUILTIN)


def tasks():
    return [json.loads(line) for line in TASKS.read_text().splitlines() if line.strip()]


def test_the_repository_has_at_least_ten_tool_chain_tasks_across_the_three_tiers():
    records = tasks()
    assert len(records) >= 10
    assert {r["kind"] for r in records} == {"tool_chain"}
    assert {r["tier"] for r in records} == {"low", "medium", "high"}
    assert len({r["task_id"] for r in records}) == len(records)
    assert sum(r["tools"] == "builtin" for r in records) >= 10


@pytest.mark.parametrize("record", tasks(), ids=lambda r: r["task_id"])
def test_every_shipped_reference_chain_passes_and_changes_the_state(record):
    tools = load_tool_set(record["tools"], TASKS.parent)
    result = check_tool_chain(record["reference"], record["reference"], tools)
    assert result.status == "passed" and result.tool_chain_valid
    if tools.executable:
        assert result.execution_success is True
        assert result_state_of(record["reference"]) != Environment().canonical()


# --- user tool sets (JSON-Schema files)

def write_tool(tmp_path, name, data):
    (tmp_path / name).write_text(json.dumps(data))
    return name


WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                          "required": ["city"]}}


def test_a_json_schema_tool_set_checks_validity_only_and_leaves_execution_unmeasured(tmp_path):
    tools = load_tool_set([write_tool(tmp_path, "weather.json", WEATHER)], tmp_path)
    reference = chain(("get_weather", {"city": "Oslo"}))
    assert check_tool_chain(chain(("get_weather", {"city": "Paris", "days": 2})), reference, tools) == \
        ToolChainResult(True, None, "passed", None, "")
    assert check_tool_chain(chain(("get_weather", {"days": 2})), reference, tools) == \
        ToolChainResult(False, None, "invalid_call", 0, "get_weather: missing required argument 'city'")
    assert check_tool_chain(chain(("get_weather", {"city": "Oslo", "units": "C"})), reference, tools).message == \
        "get_weather: unknown argument 'units'"  # no additionalProperties in the file: unknown arguments refused
    assert check_tool_chain(chain(("git_init", {})), reference, tools).message == "unknown tool 'git_init'"


def test_a_tool_file_may_allow_extra_arguments_explicitly(tmp_path):
    open_schema = {**WEATHER, "parameters": {**WEATHER["parameters"], "additionalProperties": True}}
    tools = load_tool_set([write_tool(tmp_path, "w.json", open_schema)], tmp_path)
    assert check_tool_chain(chain(("get_weather", {"city": "Oslo", "units": "C"})), chain(("get_weather", {"city": "x"})),
                            tools).status == "passed"


def test_the_shipped_example_tool_files_load():
    tools = load_tool_set(["tools/create_calendar_event.json", "tools/send_email.json"], TASKS.parent)
    assert set(tools.schemas) == {"create_calendar_event", "send_email"} and not tools.executable


@pytest.mark.parametrize("content,message", [
    (None, "tool file not found"),
    ("{", "not JSON"),
    ({"parameters": {"type": "object"}}, "name: Field required"),
    ({**WEATHER, "parameters": {"type": "array"}}, 'parameters.type: must be "object"'),
    ({**WEATHER, "parameters": {"type": "object", "properties": {"city": {"type": "text"}}}},
     "parameters: not a valid JSON Schema"),
    ({**WEATHER, "schema": {}}, "schema: unknown key"),
], ids=["missing", "not-json", "no-name", "not-object", "bad-schema", "extra-key"])
def test_a_bad_tool_file_is_bad_input_naming_the_file_and_field(tmp_path, content, message):
    if content is not None:
        (tmp_path / "t.json").write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(InputError, match=f"^{tmp_path / 't.json'}: .*") as raised:
        load_tool_set(["t.json"], tmp_path)
    assert message in str(raised.value)


def test_a_tool_defined_twice_or_an_unknown_tool_set_is_refused(tmp_path):
    write_tool(tmp_path, "a.json", WEATHER)
    write_tool(tmp_path, "b.json", WEATHER)
    with pytest.raises(InputError, match="b.json: name: tool 'get_weather' is defined twice"):
        load_tool_set(["a.json", "b.json"], tmp_path)
    with pytest.raises(InputError, match="neither"):
        load_tool_set("mine", tmp_path)


def test_the_builtin_tool_set_is_the_mock_tools_with_their_schemas():
    assert load_tool_set("builtin", Path(".")) is BUILTIN and BUILTIN.executable
    assert set(BUILTIN.schemas) == set(BUILTIN_TOOLS)


# --- the documentation

def test_the_docs_table_names_every_builtin_tool_and_each_of_its_arguments():
    rows = {line.split("|")[1].strip(" `"): line for line in (REPO / "docs" / "tool-chains.md").read_text().splitlines()
            if line.startswith("| `")}
    for name, spec in BUILTIN_TOOLS.items():
        assert name in rows, name
        for argument in spec.schema["properties"]:
            assert f"`{argument}`" in rows[name], (name, argument)
