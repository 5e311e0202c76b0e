
import pytest
import torch
import yaml

from hrm import storage
from hrm.checkpoint.discovery import resolve_checkpoint
from hrm.checkpoint.loading import (
    CheckpointChanged,
    build_checked_model,
    check_fits,
    load_checkpoint,
    load_planned_checkpoint,
    read_arch_spec,
    read_checkpoint_header,
)
from hrm.errors import InputError
from hrm.model.models import HRM, TRM

from tests.factories import TINY_SIZES, make_checkpoint


def build(path, **kwargs):
    return build_checked_model(load_checkpoint(path, **kwargs), TINY_SIZES)


def test_a_run_directory_resolves_to_its_newest_step(tmp_path):
    make_checkpoint(tmp_path, steps=(5, 40, 300))
    assert resolve_checkpoint(str(tmp_path)) == str(tmp_path / "step_300")
    assert load_checkpoint(tmp_path).step == 300


@pytest.mark.parametrize("family,cls", [("hrm", HRM), ("trm", TRM)])
def test_both_families_load_from_arch_name(tmp_path, family, cls):
    make_checkpoint(tmp_path, family=family)
    assert isinstance(build(tmp_path), cls)


@pytest.mark.parametrize("family", ["hrm", "trm"])
def test_compiled_and_plain_key_prefixes_load_the_same_weights(tmp_path, family):
    make_checkpoint(tmp_path / "plain", family=family, seed=3)
    make_checkpoint(tmp_path / "compiled", family=family, seed=3, compiled_prefix=True)
    assert any(k.startswith("_orig_mod.model.inner.") for k in torch.load(tmp_path / "compiled" / "step_10"))
    plain, compiled = build(tmp_path / "plain").state_dict(), build(tmp_path / "compiled").state_dict()
    assert plain.keys() == compiled.keys()
    assert all(torch.equal(plain[k], compiled[k]) for k in plain)


def test_an_explicit_config_serves_a_checkpoint_without_all_config(tmp_path):
    make_checkpoint(tmp_path / "run")
    lone = tmp_path / "lone"
    lone.mkdir()
    (tmp_path / "run" / "step_10").rename(lone / "step_10")
    with pytest.raises(InputError, match="all_config.yaml"):
        load_checkpoint(lone)
    assert load_checkpoint(lone / "step_10", config=tmp_path / "run" / "all_config.yaml").spec.family == "hrm"


@pytest.mark.parametrize("variant", ["mlp_t", "learned", "none", "no_puzzle_emb"])
def test_trm_variants_build_and_load(tmp_path, variant):
    overrides = {"mlp_t": {"mlp_t": True, "pos_encodings": "none"}, "learned": {"pos_encodings": "learned"},
                 "none": {"pos_encodings": "none"}, "no_puzzle_emb": {"puzzle_emb_ndim": 0, "puzzle_emb_len": 0}}
    make_checkpoint(tmp_path, family="trm", **overrides[variant])
    assert build(tmp_path).config.family == "trm"


def test_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"nope: no such checkpoint"):
        load_checkpoint(tmp_path / "nope")


def test_an_unknown_architecture_names_the_config_key(tmp_path):
    make_checkpoint(tmp_path)
    config = yaml.safe_load((tmp_path / "all_config.yaml").read_text())
    config["arch"]["name"] = "recursive_reasoning.trm_hier6@Something"
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(InputError, match=r"all_config.yaml: arch.name 'recursive_reasoning.trm_hier6@Something'"):
        load_checkpoint(tmp_path)


def test_a_trm_prefix_without_puzzle_embeddings_is_named_before_any_model_is_built(tmp_path):
    make_checkpoint(tmp_path, "trm")
    config = yaml.safe_load((tmp_path / "all_config.yaml").read_text())
    config["arch"]["puzzle_emb_ndim"] = 0  # puzzle_emb_len stays 2
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(config))
    ckpt = load_checkpoint(tmp_path)
    with pytest.raises(InputError, match=r"all_config.yaml: arch: .*puzzle_emb_ndim 0\) needs puzzle_emb_len 0, not 2"):
        ckpt.spec.model_config(TINY_SIZES)


def test_a_missing_key_is_named(tmp_path):
    (path,) = make_checkpoint(tmp_path)
    state = torch.load(path)
    del state["model.inner.q_head.bias"]
    torch.save(state, path)
    with pytest.raises(InputError, match=r"step_10: missing keys for hrm: q_head.bias"):
        build(tmp_path)


def test_an_unexpected_key_is_named(tmp_path):
    (path,) = make_checkpoint(tmp_path)
    state = torch.load(path)
    state["model.inner.extra_head.weight"] = torch.zeros(2)
    torch.save(state, path)
    with pytest.raises(InputError, match=r"unexpected keys for hrm: extra_head.weight"):
        build(tmp_path)


def test_a_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    make_checkpoint(tmp_path)
    config = yaml.safe_load((tmp_path / "all_config.yaml").read_text())
    config["arch"]["expansion"] = 13  # widens the SwiGLU: the config now disagrees with the saved tensors
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(InputError, match=r"'H_level.layers.0.mlp.gate_up_proj.weight' has shape \(512, 32\).*\(1024, 32\)"):
        build(tmp_path)


def test_a_vocab_that_disagrees_with_the_dataset_is_named_before_any_model_runs(tmp_path):
    make_checkpoint(tmp_path)
    with pytest.raises(InputError, match=r"'embed_tokens.embedding_weight' has shape \(11, 32\) but data.* vocab_size=12"):
        build_checked_model(load_checkpoint(tmp_path), TINY_SIZES.model_copy(update={"vocab_size": 12}), dataset="data")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused(tmp_path, bad):
    (path,) = make_checkpoint(tmp_path)
    state = torch.load(path)
    state["model.inner.lm_head.weight"][0, 0] = bad
    torch.save(state, path)
    with pytest.raises(InputError, match=r"tensor 'lm_head.weight' has 1 NaN/Inf values"):
        build(tmp_path)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    make_checkpoint(tmp_path)
    (tmp_path / "step_10").write_text("not a checkpoint at all")
    with pytest.raises(InputError, match=r"step_10: .*not"):
        load_checkpoint(tmp_path)


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    make_checkpoint(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model.inner.H_init": Exploit()}, tmp_path / "step_10")
    with pytest.raises(InputError) as err:
        load_checkpoint(tmp_path)
    # what was refused, without torch's advice to load it unsafely
    assert str(err.value) == (f"{tmp_path / 'step_10'}: refused to load: it is not a plain tensor checkpoint "
                              f"(Unsupported global: GLOBAL io.open was not an allowed global by default)")
    assert not marker.exists()


def test_a_non_tensor_payload_is_refused(tmp_path):
    make_checkpoint(tmp_path)
    torch.save({"step": 3, "note": "hello"}, tmp_path / "step_10")
    with pytest.raises(InputError, match=r"expected a state dict"):
        load_checkpoint(tmp_path)


def test_the_cli_reports_a_bad_checkpoint_in_one_line_with_a_nonzero_exit(tmp_path, capsys):
    from jobs.cli import main

    assert main(["inspect", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing: no such checkpoint" in err


def test_a_header_gives_every_tensor_name_shape_and_dtype_without_its_data(tmp_path):
    path = make_checkpoint(tmp_path)[0]
    header = read_checkpoint_header(str(path), read_arch_spec(tmp_path / "all_config.yaml"))
    full = load_checkpoint(path)
    assert {k: (v.shape, v.dtype) for k, v in header.state.items()} == {k: (v.shape, v.dtype)
                                                                          for k, v in full.state.items()}
    assert all(type(v).__name__ == "FakeTensor" for v in header.state.values()) and header.path is None
    check_fits(header, TINY_SIZES)


def test_a_header_in_torchs_older_single_stream_format_is_read_whole(tmp_path):
    path = make_checkpoint(tmp_path)[0]
    state = torch.load(path, weights_only=True)
    torch.save(state, path, _use_new_zipfile_serialization=False)
    header = read_checkpoint_header(str(path), read_arch_spec(tmp_path / "all_config.yaml"))
    assert set(header.state) == set(load_checkpoint(path).state)


def test_an_empty_checkpoint_file_is_named_as_empty_whether_its_header_or_its_weights_are_read(tmp_path):
    path = make_checkpoint(tmp_path)[0]
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"step_10: empty file \(0 bytes\), not a torch checkpoint$"):
        read_checkpoint_header(str(path), read_arch_spec(tmp_path / "all_config.yaml"))
    with pytest.raises(InputError, match=r"step_10: empty file \(0 bytes\), not a torch checkpoint$"):
        load_checkpoint(path)


def test_a_planned_load_refuses_a_file_rewritten_since_planning(tmp_path):
    path = make_checkpoint(tmp_path)[0]
    planned = storage.version(str(path))
    load_planned_checkpoint(str(path), str(tmp_path / "all_config.yaml"), planned)
    torch.save(torch.load(path, weights_only=True), path)  # the same tensors, written again
    with pytest.raises(CheckpointChanged, match="changed since the run was planned"):
        load_planned_checkpoint(str(path), str(tmp_path / "all_config.yaml"), planned)


def rewrite_arch(run_dir, **changes) -> str:
    path = run_dir / "all_config.yaml"
    config = yaml.safe_load(path.read_text())
    config["arch"].update(changes)
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("halt_max_steps", [0, -2])
def test_halt_max_steps_below_one_is_refused_naming_the_file_and_the_key(tmp_path, halt_max_steps):
    make_checkpoint(tmp_path)
    config = rewrite_arch(tmp_path, halt_max_steps=halt_max_steps)
    with pytest.raises(InputError) as err:
        load_checkpoint(tmp_path).spec.model_config(TINY_SIZES)
    assert str(err.value) == f"{config}: arch.halt_max_steps: Input should be greater than or equal to 1"


@pytest.mark.parametrize("key, value, message", [
    ("hidden_size", 0, "arch.hidden_size: Input should be greater than or equal to 1"),
    ("H_cycles", -1, "arch.H_cycles: Input should be greater than or equal to 1"),
    ("expansion", 0, "arch.expansion: Input should be greater than 0"),
    ("halt_exploration_prob", 2, "arch.halt_exploration_prob: Input should be less than or equal to 1"),
    ("num_heads", "two", "arch.num_heads: Input should be a valid integer, unable to parse string as an integer"),
])
def test_an_arch_size_out_of_range_or_of_the_wrong_type_is_refused_naming_the_key(tmp_path, key, value, message):
    make_checkpoint(tmp_path)
    config = rewrite_arch(tmp_path, **{key: value})
    with pytest.raises(InputError) as err:
        load_checkpoint(tmp_path).spec.model_config(TINY_SIZES)
    assert str(err.value) == f"{config}: {message}"


def test_a_key_given_twice_in_all_config_is_refused_naming_the_line_of_each(tmp_path):
    make_checkpoint(tmp_path)
    path = tmp_path / "all_config.yaml"
    path.write_text(path.read_text() + "seed: 1\n")  # make_checkpoint wrote `seed: 0` already
    first = next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if line == "seed: 0")
    last = len(path.read_text().splitlines())
    with pytest.raises(InputError) as err:
        read_arch_spec(path)
    assert str(err.value) == (f"{path}:{last}: key 'seed' appears twice in one mapping (first at line {first}); "
                              "keys must be unique")


@pytest.mark.parametrize("text, message", [
    (b"- arch\n- seed\n", "key 'arch' is missing or not a mapping"),
    (b"arch: [1, 2]\n", "key 'arch' is missing or not a mapping"),
    (b"arch:\n  name: caf\xc3\n", "2: byte 17 is not valid UTF-8 (0xc3; the file must be UTF-8 text)"),
], ids=["a list", "arch a list", "not utf-8"])
def test_an_all_config_that_is_not_a_mapping_of_utf8_text_is_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "all_config.yaml"
    path.write_bytes(text)
    with pytest.raises(InputError) as err:
        read_arch_spec(path)
    separator = ":" if message[0].isdigit() else ": "
    assert str(err.value) == f"{path}{separator}{message}"
