import json

import pytest
import yaml

from hrm.errors import InputError

from cluster.config import RunConfig, apply_override, load_run_config, validate_run_config

from tests.factories import REPO

MINIMAL = {"checkpoints": [{"path": "runs/a/step_10"}], "dataset": {"uri": "data/sudoku"}}


def write(tmp_path, doc) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def refusal(path) -> str:
    """The message of the InputError that loading the run config at `path` raises."""
    with pytest.raises(InputError) as err:
        load_run_config(path)
    return str(err.value)


def test_a_minimal_config_gets_defaults_for_everything_else(tmp_path):
    config = load_run_config(write(tmp_path, MINIMAL))
    assert config.eval.protocol == "fixed"
    assert config.dataset.split == "test"
    assert config.cluster.actor_range == (2, 2)
    assert config.cluster.cpus_per_actor == 0.5  # fractional: docs/ray.md, "CPUs"
    assert config.device == "cpu"
    assert config.output.uri == "results"


def test_a_misspelt_key_fails_naming_the_key_and_the_file(tmp_path):
    path = write(tmp_path, {**MINIMAL, "eval": {"batch_sise": 128}})
    refused = refusal(path)
    assert path in refused
    assert "eval.batch_sise: unknown key" in refused


def test_every_invalid_key_is_reported_at_once():
    doc = {
        "checkpoints": [{"path": "a", "last": 2}, {"run": "r", "every": 0}],
        "dataset": {"uri": "d"},
        "eval": {"protocol": "greedy"},
        "cluster": {"actors": {"min": 3, "max": 2}, "gpus_per_actor": -1},
    }
    with pytest.raises(InputError) as err:
        validate_run_config(doc, "run.yaml")
    message = str(err.value)
    for key in ("checkpoints.0:", "checkpoints.1.every", "eval.protocol", "cluster.actors: min 3 > max 2",
                "cluster.gpus_per_actor"):
        assert key in message


def test_a_checkpoint_source_is_either_one_path_or_one_run():
    with pytest.raises(InputError, match="exactly one of `path`"):
        validate_run_config({"checkpoints": [{"path": "a", "run": "b"}], "dataset": {"uri": "d"}}, "c")
    with pytest.raises(InputError, match="min_step 9 > max_step 3"):
        validate_run_config({"checkpoints": [{"run": "b", "min_step": 9, "max_step": 3}], "dataset": {"uri": "d"}}, "c")


def test_a_config_written_out_in_full_validates_again_as_the_manifest_stores_it():
    config = validate_run_config({**MINIMAL, "checkpoints": [{"path": "a"}, {"run": "r", "last": 2}]}, source="x")
    assert RunConfig.model_validate(config.model_dump(mode="json")) == config


def test_a_single_checkpoint_takes_no_step_filters_even_the_glob():
    with pytest.raises(InputError, match="select steps of a `run`"):
        validate_run_config({**MINIMAL, "checkpoints": [{"path": "a", "glob": "ema_*"}]}, source="x")


def test_actors_take_a_number_or_a_range():
    ranged = validate_run_config({**MINIMAL, "cluster": {"actors": {"min": 1, "max": 4}}}, "c")
    assert ranged.cluster.actor_range == (1, 4)
    with pytest.raises(InputError, match="cluster.actors: Input should be a valid integer"):
        validate_run_config({**MINIMAL, "cluster": {"actors": "two"}}, "c")
    with pytest.raises(InputError, match="cluster.actors: Input should be greater than or equal to 1"):
        validate_run_config({**MINIMAL, "cluster": {"actors": 0}}, "c")


def test_cuda_without_gpus_per_actor_is_refused():
    with pytest.raises(InputError, match="gpus_per_actor is 0"):
        validate_run_config({**MINIMAL, "eval": {"device": "cuda"}}, "c")
    config = validate_run_config({**MINIMAL, "cluster": {"gpus_per_actor": 0.25}}, "c")
    assert config.device == "cuda"


def test_overrides_set_nested_keys_and_list_items_with_yaml_typed_values(tmp_path):
    config = load_run_config(write(tmp_path, MINIMAL), [
        "eval.batch_size=128", "checkpoints.0.name=best", "cluster.actors={min: 1, max: 3}",
        "dataset.sets=[easy, hard]", "eval.dtype=null",
    ])
    assert config.eval.batch_size == 128
    assert config.checkpoints[0].name == "best"
    assert config.cluster.actor_range == (1, 3)
    assert config.dataset.sets == ["easy", "hard"]


def test_an_override_of_an_unknown_key_fails_like_a_typo_in_the_file(tmp_path):
    with pytest.raises(InputError, match="eval.batchsize: unknown key"):
        load_run_config(write(tmp_path, MINIMAL), ["eval.batchsize=1"])


@pytest.mark.parametrize("override, message", [
    ("eval.batch_size", "expected KEY=VALUE"),
    ("checkpoints.5.name=x", "no such list item"),
    ("eval.batch_size.x=1", "eval.batch_size is a value"),
])
def test_malformed_overrides_say_what_is_wrong(override, message):
    doc = {**MINIMAL, "eval": {"batch_size": 4}}
    with pytest.raises(InputError, match=message):
        apply_override(doc, override)


def test_the_default_run_id_is_a_timestamp_and_the_config_hash_and_ignores_the_run_id():
    config = RunConfig.model_validate(MINIMAL)
    named = RunConfig.model_validate({**MINIMAL, "output": {"run_id": "mine"}})
    assert config.config_hash() == named.config_hash()
    assert config.resolved_run_id(0) == f"19700101-000000-{config.config_hash()[:8]}"
    assert named.resolved_run_id() == "mine"
    with pytest.raises(InputError, match="output.run_id"):
        validate_run_config({**MINIMAL, "output": {"run_id": "../escape"}}, "c")


def test_the_unit_identity_covers_what_changes_results_and_not_how_the_work_is_spread():
    base = RunConfig.model_validate(MINIMAL)
    spread = RunConfig.model_validate({**MINIMAL, "cluster": {"actors": 7, "cache_size": 9}})
    bf16 = RunConfig.model_validate({**MINIMAL, "eval": {"dtype": "bfloat16"}})
    assert base.eval_identity() == spread.eval_identity()
    assert base.eval_identity() != bf16.eval_identity()


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(InputError, match="mapping of sections"):
        load_run_config(path)
    with pytest.raises(InputError, match="cannot read"):
        load_run_config(tmp_path / "missing.yaml")


def test_the_quickstart_config_is_valid():

    config = load_run_config(REPO / "configs" / "quickstart.yaml")
    assert config.checkpoints


@pytest.mark.parametrize("section, message", [
    ({"eval": {"batch_size": 0}}, "eval.batch_size: Input should be greater than or equal to 1"),
    ({"eval": {"steps": -3}}, "eval.steps: Input should be greater than or equal to 1"),
    ({"eval": {"steps": 0}}, "eval.steps: Input should be greater than or equal to 1"),
    ({"eval": {"min_steps": 0}}, "eval.min_steps: Input should be greater than or equal to 1"),
    ({"eval": {"steps": 2, "min_steps": 3}}, "eval: min_steps 3 > steps 2: an example runs at most `steps` steps"),
    ({"eval": {"device": "tpu"}}, "eval.device: Input should be 'cpu', 'cuda' or 'auto'"),
    ({"cluster": {"torch_threads": -1}}, "cluster.torch_threads: Input should be greater than or equal to 1"),
    ({"eval": {"batch_size": "many"}},
     "eval.batch_size: Input should be a valid integer, unable to parse string as an integer"),
    ({"voting": {"enabled": True, "pass_k": [0, 2]}}, "voting.pass_k.0: Input should be greater than or equal to 1"),
    ({"voting": {"pass_k": []}}, "voting.pass_k: List should have at least 1 item after validation, not 0"),
    ({"ensembles": [{"name": "../../escape", "top_k": 1}]},
     "ensembles.0.name: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._-]*$'"),
    ({"dataset": {"uri": "data/sudoku", "limit": 0}}, "dataset.limit: Input should be greater than or equal to 1"),
    ({"dataset": {"uri": "data/sudoku", "sample_seed": 3}},
     "dataset: sample_seed 3 without limit: a seeded sample draws `limit` examples of each set; give dataset.limit "
     "too"),
    ({"dataset": {"uri": "data/sudoku", "limit": 5, "sample_seed": -1}},
     "dataset.sample_seed: Input should be greater than or equal to 0"),
    ({"dataset": {"uri": "data/arc", "limit": 100}, "voting": {"enabled": True}},
     "(top level): voting.enabled with dataset.limit: ARC voting needs every augmented version of each test "
     "puzzle, which the first N examples do not hold"),
    ({"ablations": ["blank_puzzle_ids", "blank_puzzle_ids"]},
     "(top level): ablations: ['blank_puzzle_ids', 'blank_puzzle_ids'] names one ablation twice"),
    ({"ablations": ["no_inputs"]}, "ablations.0: Input should be 'blank_puzzle_ids' or 'shuffled_puzzle_ids'"),
], ids=["batch_size", "negative steps", "zero steps", "min_steps", "min_steps > steps", "device", "threads", "type",
        "pass@0", "no pass_k", "ensemble name with a path", "limit 0", "sample seed without a limit",
        "negative sample seed", "voting on a limited split", "ablation twice",
        "unknown ablation"])
def test_an_eval_or_cluster_field_out_of_range_is_refused_naming_the_file_and_the_key(tmp_path, section, message):
    path = write(tmp_path, {**MINIMAL, **section})
    refused = refusal(path)
    assert refused == f"{path}: {message}"


def test_a_key_given_twice_in_a_run_config_is_refused_naming_the_line_of_each(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("checkpoints:\n  - path: a\ndataset:\n  uri: d\neval:\n  batch_size: 8\n  batch_size: 64\n")
    refused = refusal(path)
    assert refused == (f"{path}:7: key 'batch_size' appears twice in one mapping (first at line 6); "
                              "keys must be unique")


def test_a_run_config_that_is_not_utf8_is_refused_naming_the_line_and_the_byte(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"checkpoints:\n  - path: caf\xe9\n")
    refused = refusal(path)
    assert refused == f"{path}:2: byte 26 is not valid UTF-8 (0xe9; the file must be UTF-8 text)"


def test_a_run_config_that_is_not_yaml_is_refused_in_one_line_naming_the_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("checkpoints:\n  - path: a\n dataset: [\n")
    refused = refusal(path)
    assert refused.startswith(f"{path}:3: not valid YAML: ")
    assert "\n" not in refused


def test_a_directory_given_as_the_run_config_is_refused_naming_it(tmp_path):
    refused = refusal(tmp_path)
    assert refused == f"{tmp_path}: cannot read it: Is a directory"


def test_an_override_with_a_repeated_key_is_refused_naming_the_override():
    with pytest.raises(InputError) as err:
        apply_override({**MINIMAL}, "cluster.actors={min: 1, min: 2}")
    assert str(err.value).startswith("--set cluster.actors:1: key 'min' appears twice in one mapping")


# --------------------------------------------------------------------------- the published JSON Schema

SCHEMA = REPO / "docs" / "run-config.schema.json"
REGENERATE_SCHEMA = ("python -c \"import json; from cluster.config import RunConfig; "
                     "open('docs/run-config.schema.json', 'w').write("
                     "json.dumps(RunConfig.model_json_schema(), indent=2, sort_keys=True) + '\\n')\"")


def test_the_published_json_schema_is_the_run_configs_own():
    current = json.dumps(RunConfig.model_json_schema(), indent=2, sort_keys=True) + "\n"
    assert SCHEMA.read_text() == current, f"docs/run-config.schema.json is stale; regenerate it: {REGENERATE_SCHEMA}"


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_run_config_is_valid_under_the_published_schema(path):
    import jsonschema  # a dependency of ray

    jsonschema.validate(yaml.safe_load(path.read_text()), json.loads(SCHEMA.read_text()))


# --------------------------------------------------------------------------- output.log_samples


def test_log_samples_is_off_unless_the_output_section_asks_and_a_non_boolean_is_refused(tmp_path):
    assert load_run_config(write(tmp_path, MINIMAL)).output.log_samples is False
    assert load_run_config(write(tmp_path, MINIMAL), ["output.log_samples=true"]).output.log_samples is True
    refused = refusal(write(tmp_path, {**MINIMAL, "output": {"log_samples": "sometimes"}}))
    assert "output.log_samples" in refused


@pytest.mark.parametrize("eval_section, message", [
    ({"compile_mode": "max-autotune"}, "eval.compile_mode: compile_mode 'max-autotune' is a mode of compile, which is off"),
    ({"compile": True, "compile_mode": "reduce-overhead"},
     "eval.compile_mode: compile_mode 'reduce-overhead' runs CUDA graphs: CUDA only, not cpu"),
])
def test_a_compile_mode_the_engine_cannot_run_is_refused_naming_the_key(tmp_path, eval_section, message):
    assert message in refusal(write(tmp_path, {**MINIMAL, "eval": eval_section}))


def test_cuda_graphs_are_a_compile_mode_of_actors_given_a_gpu():
    config = RunConfig.model_validate({**MINIMAL, "eval": {"compile": True, "compile_mode": "reduce-overhead"},
                                       "cluster": {"gpus_per_actor": 0.5}})
    assert config.device == "cuda" and config.eval.compile_mode == "reduce-overhead"


def test_a_compile_mode_is_part_of_the_unit_identity_only_when_set():
    compiled = RunConfig.model_validate({**MINIMAL, "eval": {"compile": True}})
    tuned = RunConfig.model_validate({**MINIMAL, "eval": {"compile": True, "compile_mode": "max-autotune"}})
    assert "compile_mode" not in compiled.eval_identity()  # units evaluated before the setting keep their ids
    assert tuned.eval_identity() == {**compiled.eval_identity(), "compile_mode": "max-autotune"}
