"""The built-in mock tools: each tool's effect on the state and the calls it refuses."""

import pytest

from hrm.checks.mock_tools import BUILTIN_TOOLS, START_FILES, Environment, ToolError


def run(env, *calls):
    for tool, args in calls:
        env.apply(tool, args)
    return env


def refused(env, tool, args, match):
    before = env.canonical()
    with pytest.raises(ToolError, match=match):
        env.apply(tool, args)
    return before


def repo_with_commit(path="/p"):
    return run(Environment(), ("git_init", {"path": path}), ("write_file", {"path": f"{path}/a.txt", "content": "a\n"}),
               ("git_add", {"repo": path, "paths": ["."]}), ("git_commit", {"repo": path, "message": "first"}))


def test_every_replay_starts_from_the_same_fixed_state():
    assert Environment().canonical() == Environment().canonical()
    assert Environment().files == START_FILES
    assert Environment().canonical()["dirs"] == {"/app": True}


def test_every_tool_has_an_object_schema_refusing_unknown_arguments_and_a_documented_summary():
    for name, spec in BUILTIN_TOOLS.items():
        assert spec.schema["type"] == "object", name
        assert spec.schema["additionalProperties"] is False, name
        assert spec.summary, name


# --- files

def test_write_file_creates_parents_and_overwrites():
    env = run(Environment(), ("write_file", {"path": "src/pkg/a.py", "content": "1"}),
              ("write_file", {"path": "/src/pkg/a.py", "content": "2"}))
    assert env.files["/src/pkg/a.py"] == "2"
    assert {"/src", "/src/pkg"} <= env.dirs


def test_write_file_refuses_a_directory_a_file_in_the_way_and_leaving_the_root():
    env = Environment()
    refused(env, "write_file", {"path": "/app", "content": ""}, "is a directory")
    refused(env, "write_file", {"path": "/README.md/x", "content": ""}, "is a file")
    refused(env, "write_file", {"path": "../x", "content": ""}, "leaves the root")


def test_append_file_adds_at_the_end_and_creates_a_missing_file():
    env = run(Environment(), ("append_file", {"path": "/README.md", "content": "more\n"}),
              ("append_file", {"path": "/new/log.txt", "content": "x"}))
    assert env.files["/README.md"] == START_FILES["/README.md"] + "more\n"
    assert env.files["/new/log.txt"] == "x"
    refused(env, "append_file", {"path": "/app", "content": ""}, "is a directory")


def test_read_file_changes_nothing_and_fails_on_a_missing_file_or_a_directory():
    env = run(Environment(), ("read_file", {"path": "/app/main.py"}))
    assert env.canonical() == Environment().canonical()
    refused(env, "read_file", {"path": "/nope"}, "no such file: /nope")
    refused(env, "read_file", {"path": "/app"}, "is a directory")


def test_delete_file_removes_a_file_only():
    env = run(Environment(), ("delete_file", {"path": "/README.md"}))
    assert "/README.md" not in env.files
    refused(env, "delete_file", {"path": "/README.md"}, "no such file")
    refused(env, "delete_file", {"path": "/app"}, "is a directory")


def test_make_dir_is_mkdir_p_and_refuses_a_file_in_the_way():
    env = run(Environment(), ("make_dir", {"path": "/a/b/c"}), ("make_dir", {"path": "/a/b"}))
    assert {"/a", "/a/b", "/a/b/c"} <= env.dirs
    refused(env, "make_dir", {"path": "/README.md/x"}, "is a file")


def test_list_dir_changes_nothing_and_fails_on_a_missing_directory():
    env = run(Environment(), ("list_dir", {"path": "/app"}), ("list_dir", {"path": "/"}))
    assert env.canonical() == Environment().canonical()
    refused(env, "list_dir", {"path": "/README.md"}, "no such directory")


def test_move_file_renames_overwrites_and_refuses_a_directory_destination():
    env = run(Environment(), ("move_file", {"source": "/app/main.py", "destination": "/src/app.py"}))
    assert "/app/main.py" not in env.files and env.files["/src/app.py"] == START_FILES["/app/main.py"]
    refused(env, "move_file", {"source": "/nope", "destination": "/x"}, "no such file")
    refused(env, "move_file", {"source": "/README.md", "destination": "/app"}, "is a directory")


# --- git

def test_git_init_makes_an_unborn_repository_and_refuses_nesting():
    env = run(Environment(), ("git_init", {"path": "/p", "initial_branch": "trunk"}))
    state = env.canonical()["repos"]["/p"]
    assert state["head"] == "trunk" and state["branches"] == {} and state["commits"] == {}
    assert "/p" in env.dirs
    refused(env, "git_init", {"path": "/p"}, "already a git repository")
    refused(env, "git_init", {"path": "/p/sub"}, "already inside repository /p")
    refused(env, "git_init", {"path": "/"}, "already inside repository /p")
    refused(Environment(), "git_init", {"path": "/README.md"}, "is a file")
    refused(Environment(), "git_init", {"path": "/q", "initial_branch": "bad name"}, "not a valid branch name")


def test_git_add_stages_content_at_add_time_and_deletions():
    env = repo_with_commit()
    run(env, ("write_file", {"path": "/p/b.txt", "content": "b"}), ("git_add", {"repo": "/p", "paths": ["b.txt"]}),
        ("write_file", {"path": "/p/b.txt", "content": "changed later"}))
    assert env.repos["/p"].index == {"a.txt": "a\n", "b.txt": "b"}
    run(env, ("delete_file", {"path": "/p/a.txt"}), ("git_add", {"repo": "/p", "paths": ["a.txt"]}))
    assert env.repos["/p"].index == {"b.txt": "b"}


def test_git_add_stages_a_directory_and_refuses_an_unmatched_path_or_a_non_repository():
    env = run(Environment(), ("git_init", {"path": "/p"}), ("write_file", {"path": "/p/src/x.py", "content": "x"}),
              ("write_file", {"path": "/p/top.txt", "content": "t"}), ("git_add", {"repo": "/p", "paths": ["src"]}))
    assert env.repos["/p"].index == {"src/x.py": "x"}
    before = refused(env, "git_add", {"repo": "/p", "paths": ["top.txt", "missing.txt"]}, "did not match any files")
    assert env.canonical() == before  # all or nothing, as git add
    refused(env, "git_add", {"repo": "/p", "paths": ["../README.md"]}, "outside repository")
    refused(env, "git_add", {"repo": "/app", "paths": ["."]}, "not a git repository: /app")


def test_git_commit_records_the_staged_tree_with_a_content_addressed_id():
    env = repo_with_commit()
    repo = env.repos["/p"]
    (commit_id, commit), = repo.commits.items()
    assert repo.branches == {"main": commit_id}
    assert commit.parents == () and commit.message == "first" and commit.tree == {"a.txt": "a\n"}
    assert repo_with_commit().repos["/p"].branches == repo.branches  # the same work, the same id


def test_git_commit_refuses_nothing_staged_and_a_blank_message():
    env = repo_with_commit()
    refused(env, "git_commit", {"repo": "/p", "message": "again"}, "nothing to commit")
    refused(run(Environment(), ("git_init", {"path": "/p"})), "git_commit", {"repo": "/p", "message": "x"},
            "nothing to commit")
    run(env, ("write_file", {"path": "/p/a.txt", "content": "new"}), ("git_add", {"repo": "/p", "paths": ["."]}))
    refused(env, "git_commit", {"repo": "/p", "message": "  "}, "empty commit message")


def test_git_branch_creates_at_the_current_commit_without_switching():
    env = run(repo_with_commit(), ("git_branch", {"repo": "/p", "name": "dev"}))
    repo = env.repos["/p"]
    assert repo.branches["dev"] == repo.branches["main"] and repo.head == "main"
    refused(env, "git_branch", {"repo": "/p", "name": "dev"}, "already exists")
    refused(env, "git_branch", {"repo": "/p", "name": "a..b"}, "not a valid branch name")
    refused(run(Environment(), ("git_init", {"path": "/q"})), "git_branch", {"repo": "/q", "name": "dev"},
            "has no commits yet")


def test_git_tag_marks_the_current_commit():
    env = run(repo_with_commit(), ("git_tag", {"repo": "/p", "name": "v1.0"}))
    assert env.repos["/p"].tags == {"v1.0": env.repos["/p"].branches["main"]}
    refused(env, "git_tag", {"repo": "/p", "name": "v1.0"}, "already exists")
    refused(run(Environment(), ("git_init", {"path": "/q"})), "git_tag", {"repo": "/q", "name": "v1"},
            "has no commits yet")


def test_git_switch_create_on_an_unborn_repository_renames_the_unborn_branch():
    env = run(Environment(), ("git_init", {"path": "/p"}),
              ("git_switch", {"repo": "/p", "branch": "feature", "create": True}))
    assert env.repos["/p"].head == "feature" and env.repos["/p"].branches == {}


def test_git_switch_replaces_the_tracked_files_and_keeps_untracked_ones():
    env = run(repo_with_commit(), ("git_switch", {"repo": "/p", "branch": "feature", "create": True}),
              ("write_file", {"path": "/p/lib/f.txt", "content": "f"}), ("git_add", {"repo": "/p", "paths": ["lib"]}),
              ("git_commit", {"repo": "/p", "message": "feature"}),
              ("write_file", {"path": "/p/notes.txt", "content": "untracked"}),
              ("git_switch", {"repo": "/p", "branch": "main"}))
    assert "/p/lib/f.txt" not in env.files and "/p/lib" not in env.dirs  # emptied directories go, as in git
    assert env.files["/p/notes.txt"] == "untracked"
    assert env.repos["/p"].index == {"a.txt": "a\n"}
    run(env, ("git_switch", {"repo": "/p", "branch": "feature"}))
    assert env.files["/p/lib/f.txt"] == "f"


def test_git_switch_refuses_a_missing_branch_an_existing_one_to_create_and_uncommitted_changes():
    env = run(repo_with_commit(), ("git_branch", {"repo": "/p", "name": "dev"}))
    refused(env, "git_switch", {"repo": "/p", "branch": "nope"}, "no branch 'nope'")
    refused(env, "git_switch", {"repo": "/p", "branch": "dev", "create": True}, "already exists")
    run(env, ("git_switch", {"repo": "/p", "branch": "dev"}), ("write_file", {"path": "/p/a.txt", "content": "x"}),
        ("git_add", {"repo": "/p", "paths": ["."]}), ("git_commit", {"repo": "/p", "message": "dev"}),
        ("write_file", {"path": "/p/a.txt", "content": "dirty"}))
    refused(env, "git_switch", {"repo": "/p", "branch": "main"}, "uncommitted changes to a.txt")
    run(env, ("git_add", {"repo": "/p", "paths": ["a.txt"]}))
    refused(env, "git_switch", {"repo": "/p", "branch": "main"}, "staged changes are not committed")


def test_git_switch_refuses_to_overwrite_an_untracked_file():
    env = run(repo_with_commit(), ("git_switch", {"repo": "/p", "branch": "f", "create": True}),
              ("write_file", {"path": "/p/b.txt", "content": "f"}), ("git_add", {"repo": "/p", "paths": ["."]}),
              ("git_commit", {"repo": "/p", "message": "b"}), ("git_switch", {"repo": "/p", "branch": "main"}),
              ("write_file", {"path": "/p/b.txt", "content": "mine"}))
    refused(env, "git_switch", {"repo": "/p", "branch": "f"}, "untracked file b.txt would be overwritten")


def feature_branch(env, name, path, content):
    return run(env, ("git_switch", {"repo": "/p", "branch": name, "create": True}),
               ("write_file", {"path": f"/p/{path}", "content": content}), ("git_add", {"repo": "/p", "paths": ["."]}),
               ("git_commit", {"repo": "/p", "message": name}), ("git_switch", {"repo": "/p", "branch": "main"}))


def test_git_merge_fast_forwards_and_is_a_no_op_when_up_to_date():
    env = feature_branch(repo_with_commit(), "f", "b.txt", "b")
    run(env, ("git_merge", {"repo": "/p", "branch": "f"}))
    repo = env.repos["/p"]
    assert repo.branches["main"] == repo.branches["f"] and env.files["/p/b.txt"] == "b"
    before = env.canonical()
    run(env, ("git_merge", {"repo": "/p", "branch": "f"}))
    assert env.canonical() == before


def test_git_merge_of_diverged_branches_makes_a_merge_commit_with_both_changes():
    env = feature_branch(repo_with_commit(), "f", "b.txt", "b")
    run(env, ("write_file", {"path": "/p/c.txt", "content": "c"}), ("git_add", {"repo": "/p", "paths": ["."]}),
        ("git_commit", {"repo": "/p", "message": "c"}), ("git_merge", {"repo": "/p", "branch": "f"}))
    repo = env.repos["/p"]
    merge = repo.commits[repo.branches["main"]]
    assert merge.message == "Merge branch 'f'" and merge.parents[1] == repo.branches["f"]
    assert merge.tree == {"a.txt": "a\n", "b.txt": "b", "c.txt": "c"} == repo.index
    assert env.files["/p/b.txt"] == "b"


def test_git_merge_refuses_a_conflict_a_missing_branch_and_uncommitted_changes():
    env = feature_branch(repo_with_commit(), "f", "a.txt", "theirs")
    refused(env, "git_merge", {"repo": "/p", "branch": "nope"}, "no branch 'nope'")
    run(env, ("write_file", {"path": "/p/a.txt", "content": "dirty"}))
    refused(env, "git_merge", {"repo": "/p", "branch": "f"}, "uncommitted changes to a.txt")
    run(env, ("git_add", {"repo": "/p", "paths": ["."]}), ("git_commit", {"repo": "/p", "message": "ours"}))
    refused(env, "git_merge", {"repo": "/p", "branch": "f"}, "merge conflict in a.txt")


def test_git_status_and_log_change_nothing_and_log_needs_a_commit():
    env = run(repo_with_commit(), ("git_status", {"repo": "/p"}), ("git_log", {"repo": "/p"}))
    assert env.canonical() == repo_with_commit().canonical()
    refused(run(Environment(), ("git_init", {"path": "/q"})), "git_log", {"repo": "/q"}, "has no commits yet")
    refused(Environment(), "git_status", {"repo": "/"}, "not a git repository")


# --- containers

DOCKERFILE = 'FROM python:3.12-slim\nCOPY . /app\nCMD ["python", "/app/main.py"]\n'


def built(tag="web:1.0"):
    return run(Environment(), ("write_file", {"path": "/app/Dockerfile", "content": DOCKERFILE}),
               ("docker_build", {"context": "/app", "tag": tag}))


def test_docker_build_tags_an_image_whose_id_hashes_the_dockerfile_and_context():
    env = built()
    assert set(env.images) == {"web:1.0"} and env.images["web:1.0"] == built().images["web:1.0"]
    run(env, ("docker_build", {"context": "/app", "tag": "web"}))
    assert env.images["web:latest"] == env.images["web:1.0"]
    run(env, ("write_file", {"path": "/app/main.py", "content": "changed"}), ("docker_build", {"context": "/app", "tag": "web:1.0"}))
    assert env.images["web:1.0"] != env.images["web:latest"]


def test_docker_build_refuses_a_missing_dockerfile_or_context_and_a_bad_tag():
    refused(Environment(), "docker_build", {"context": "/app", "tag": "web"}, "no Dockerfile at /app/Dockerfile")
    refused(Environment(), "docker_build", {"context": "/nope", "tag": "web"}, "no build context directory")
    refused(built(), "docker_build", {"context": "/app", "tag": "Web App"}, "invalid image reference")


def test_docker_build_refuses_a_dockerfile_without_from_or_with_a_copy_source_missing():
    env = run(Environment(), ("write_file", {"path": "/app/Dockerfile", "content": "RUN echo hi\n"}))
    refused(env, "docker_build", {"context": "/app", "tag": "web"}, "first instruction must be FROM")
    run(env, ("write_file", {"path": "/app/Dockerfile", "content": "ARG V=3\nFROM python:$V\nCOPY req.txt /x\n"}))
    refused(env, "docker_build", {"context": "/app", "tag": "web"}, "COPY source 'req.txt' not found")
    run(env, ("write_file", {"path": "/app/Dockerfile", "content": "FROM python\nCOPY ../README.md /x\n"}))
    refused(env, "docker_build", {"context": "/app", "tag": "web"}, "not found in the build context")
    run(env, ("write_file", {"path": "/app/Dockerfile", "content": 'FROM python\nCOPY ["main.py", \n'}))
    refused(env, "docker_build", {"context": "/app", "tag": "web"}, "COPY has a malformed JSON array")
    run(env, ("write_file", {"path": "/app/Dockerfile", "content": 'FROM python\nCOPY ["main.py", "/x"]\n'}),
        ("docker_build", {"context": "/app", "tag": "web"}))
    assert "web:latest" in env.images


def test_docker_run_starts_counted_containers_and_refuses_a_missing_image_a_taken_name_or_port():
    env = run(built(), ("docker_run", {"image": "web:1.0", "name": "api", "ports": ["8080:80"]}),
              ("docker_run", {"image": "web:1.0"}))
    state = env.canonical()["containers"]
    assert state["c1"] == {"name": "api", "image": "web:1.0", "image_id": env.images["web:1.0"], "ports": ["8080:80"],
                           "state": "running"}
    assert state["c2"]["name"] == "container-2"
    refused(env, "docker_run", {"image": "web:2.0"}, "no image web:2.0")
    refused(env, "docker_run", {"image": "web:1.0", "name": "api"}, "already in use")
    refused(env, "docker_run", {"image": "web:1.0", "ports": ["8080:81"]}, "host port 8080 is already allocated")
    refused(env, "docker_run", {"image": "web:1.0", "ports": ["80"]}, "invalid port mapping")


def test_docker_stop_and_rm_by_id_or_name():
    env = run(built(), ("docker_run", {"image": "web:1.0", "name": "api"}))
    refused(env, "docker_rm", {"container": "api"}, "is running")
    run(env, ("docker_stop", {"container": "c1"}), ("docker_stop", {"container": "api"}))
    assert env.containers["c1"].state == "exited"
    run(env, ("docker_rm", {"container": "api"}), ("docker_run", {"image": "web:1.0"}))
    assert list(env.containers) == ["c2"]  # ids keep counting
    refused(env, "docker_stop", {"container": "api"}, "no container 'api'")
    run(env, ("docker_ps", {}))


# --- deployments

def deployed():
    env = built("web:1.0")
    run(env, ("write_file", {"path": "/app/main.py", "content": "v2"}), ("docker_build", {"context": "/app", "tag": "web:2.0"}))
    return run(env, ("deploy", {"environment": "staging", "image": "web:1.0"}))


def test_deploy_records_the_replaced_version_and_rollback_restores_it_keeping_replicas():
    env = run(deployed(), ("deploy", {"environment": "staging", "image": "web:2.0", "replicas": 3}))
    state = env.canonical()["deployments"]["staging"]
    assert (state["image"], state["replicas"]) == ("web:2.0", 3)
    assert [h["image"] for h in state["history"]] == ["web:1.0"]
    run(env, ("rollback", {"environment": "staging"}))
    state = env.canonical()["deployments"]["staging"]
    assert (state["image"], state["replicas"], state["history"]) == ("web:1.0", 3, [])
    refused(env, "rollback", {"environment": "staging"}, "no previous version")


def test_redeploying_the_running_image_only_sets_replicas():
    env = run(deployed(), ("deploy", {"environment": "staging", "image": "web:1.0", "replicas": 2}))
    assert env.canonical()["deployments"]["staging"]["history"] == []
    assert env.deployments["staging"].replicas == 2


def test_deploy_refuses_an_image_not_built():
    refused(Environment(), "deploy", {"environment": "prod", "image": "web:1.0"}, "no image web:1.0")


def test_scale_and_status_need_a_deployment():
    env = run(deployed(), ("scale", {"environment": "staging", "replicas": 0}),
              ("deployment_status", {"environment": "staging"}))
    assert env.deployments["staging"].replicas == 0
    refused(env, "scale", {"environment": "prod", "replicas": 2}, "nothing is deployed to 'prod'")
    refused(env, "deployment_status", {"environment": "prod"}, "nothing is deployed")
    refused(env, "rollback", {"environment": "prod"}, "nothing is deployed")
