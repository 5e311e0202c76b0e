"""The built-in mock tool set: files, git, containers and deployments, in one deterministic
in-memory environment that every replay starts from the same fixed state (docs/tool-chains.md).

Each tool is defined once: a pydantic model of its arguments (whose JSON Schema is what a call
is validated against) and a function giving its effect on the `Environment`. A call that cannot
run on the current state (commit with nothing staged, build without a Dockerfile, switch to a
missing branch, ...) raises `ToolError`, which the checker reports as that call's execution
failure. Nothing here is random or clock-based: commit ids hash content, parents and message;
image ids hash the Dockerfile and its build context; container ids count up — so the same work
always reaches the same state, whatever the order of independent calls.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field


class ToolError(Exception):
    """A well-formed call that cannot run on the current state; the message says why, one line."""


# --- the state -------------------------------------------------------------------------------

# The fixed start state every replay begins from: a small project to work on.
START_FILES: dict[str, str] = {
    "/README.md": "# Demo project\n",
    "/app/main.py": 'print("hello from the demo app")\n',
    "/app/requirements.txt": "flask==3.0.0\n",
}


@dataclass
class Commit:
    parents: tuple[str, ...]
    message: str
    tree: dict[str, str]  # path relative to the repository → content


@dataclass
class Repo:
    head: str  # the current branch; it has no entry in `branches` until its first commit
    branches: dict[str, str] = field(default_factory=dict)  # name → commit id
    tags: dict[str, str] = field(default_factory=dict)
    index: dict[str, str] = field(default_factory=dict)  # the next commit's tree, as git's index
    commits: dict[str, Commit] = field(default_factory=dict)

    def head_commit(self) -> str | None:
        return self.branches.get(self.head)

    def head_tree(self) -> dict[str, str]:
        commit = self.head_commit()
        return dict(self.commits[commit].tree) if commit else {}


@dataclass
class Container:
    name: str
    image: str  # the tag it was run from
    image_id: str
    ports: tuple[str, ...]
    state: str  # "running" | "exited"


@dataclass
class Deployment:
    image: str
    image_id: str
    replicas: int
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier (tag, image id), oldest first


@dataclass
class Environment:
    """The whole mock world. Paths are absolute POSIX paths ("/app/main.py"); the root is "/"."""

    files: dict[str, str] = field(default_factory=lambda: dict(START_FILES))
    dirs: set[str] = field(default_factory=lambda: {"/", "/app"})
    repos: dict[str, Repo] = field(default_factory=dict)  # repository directory → repository
    images: dict[str, str] = field(default_factory=dict)  # tag → image id
    containers: dict[str, Container] = field(default_factory=dict)  # id → container
    containers_started: int = 0  # the counter container ids come from
    deployments: dict[str, Deployment] = field(default_factory=dict)  # environment name → deployment

    def apply(self, tool: str, args: dict[str, Any]) -> None:
        """Run one call of a built-in tool; `ToolError` if it cannot run on this state."""
        spec = BUILTIN_TOOLS[tool]
        spec.run(self, spec.args.model_validate(args))

    def canonical(self) -> dict[str, Any]:
        """The state as plain, key-sorted JSON data: what two replays' end states are compared by.
        The container counter is left out: ids already carry it."""
        return {
            "files": dict(sorted(self.files.items())),
            "dirs": {d: True for d in sorted(self.dirs - {"/"})},  # by key, so a difference names the directory
            "repos": {path: {
                "head": repo.head,
                "branches": dict(sorted(repo.branches.items())),
                "tags": dict(sorted(repo.tags.items())),
                "index": dict(sorted(repo.index.items())),
                "commits": {cid: {"parents": list(c.parents), "message": c.message, "tree": dict(sorted(c.tree.items()))}
                            for cid, c in sorted(repo.commits.items())},
            } for path, repo in sorted(self.repos.items())},
            "images": dict(sorted(self.images.items())),
            "containers": {cid: {"name": c.name, "image": c.image, "image_id": c.image_id, "ports": list(c.ports),
                                 "state": c.state} for cid, c in sorted(self.containers.items())},
            "deployments": {name: {"image": d.image, "image_id": d.image_id, "replicas": d.replicas,
                                   "history": [{"image": tag, "image_id": iid} for tag, iid in d.history]}
                            for name, d in sorted(self.deployments.items())},
        }


# --- the tool registry -----------------------------------------------------------------------

class Args(BaseModel):
    """A tool's arguments: unknown ones are refused (the schema says additionalProperties false)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class MockTool:
    name: str
    summary: str
    args: type[Args]
    run: Callable[[Environment, Any], None]

    @property
    def schema(self) -> dict[str, Any]:
        return self.args.model_json_schema()


BUILTIN_TOOLS: dict[str, MockTool] = {}


def tool(run: Callable[[Environment, Any], None]) -> Callable[[Environment, Any], None]:
    """Register `run` as the tool of its name, its arguments the model its `args` is annotated with."""
    BUILTIN_TOOLS[run.__name__] = MockTool(run.__name__, inspect.getdoc(run) or "", get_type_hints(run)["args"], run)
    return run


def _id(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


# --- files -----------------------------------------------------------------------------------

def norm(path: str, base: str = "/") -> str:
    """`path` made absolute (relative ones against `base`) and normalized; ".." above the root is an error."""
    parts: list[str] = [] if path.startswith("/") else [p for p in base.split("/") if p]
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ToolError(f"path {path!r} leaves the root")
            parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _under(path: str, directory: str) -> bool:
    return directory == "/" or path == directory or path.startswith(directory + "/")


def _make_dirs(env: Environment, directory: str) -> None:
    """mkdir -p: every missing directory up to `directory`; an existing file in the way is an error."""
    chain = []
    while directory not in env.dirs:
        if directory in env.files:
            raise ToolError(f"{directory} is a file, not a directory")
        chain.append(directory)
        directory = _parent(directory)
    env.dirs.update(chain)


def _file(env: Environment, path: str) -> str:
    target = norm(path)
    if target not in env.files:
        raise ToolError(f"{target} is a directory" if target in env.dirs else f"no such file: {target}")
    return target


def _prune_empty_dirs(env: Environment, removed: str, stop: str) -> None:
    """Remove the directories `removed` leaves empty, up to (not including) `stop`, as git does."""
    directory = _parent(removed)
    while directory != stop and _under(directory, stop) and not any(
            _under(p, directory) and p != directory for p in [*env.files, *env.dirs]):
        env.dirs.discard(directory)
        directory = _parent(directory)


def _file_to_write(env: Environment, path: str) -> str:
    """The normalised path of a file about to be written, its missing parents created; a
    directory there is an error at this call."""
    target = norm(path)
    if target in env.dirs:
        raise ToolError(f"{target} is a directory")
    _make_dirs(env, _parent(target))
    return target


class WriteFileArgs(Args):
    path: str = Field(min_length=1, description="the file; missing parent directories are created")
    content: str = Field(description="the whole new content")


@tool
def write_file(env: Environment, args: WriteFileArgs) -> None:
    """Create or overwrite a file with `content`, creating missing parent directories."""
    target = _file_to_write(env, args.path)
    env.files[target] = args.content


class AppendFileArgs(Args):
    path: str = Field(min_length=1, description="the file; created if missing")
    content: str = Field(description="text added at the end")


@tool
def append_file(env: Environment, args: AppendFileArgs) -> None:
    """Add `content` at the end of a file (created, with its parents, if missing)."""
    target = _file_to_write(env, args.path)
    env.files[target] = env.files.get(target, "") + args.content


class PathArgs(Args):
    path: str = Field(min_length=1)


@tool
def read_file(env: Environment, args: PathArgs) -> None:
    """Read a file (no effect on the state; fails if it does not exist)."""
    _file(env, args.path)


@tool
def delete_file(env: Environment, args: PathArgs) -> None:
    """Delete a file (not a directory)."""
    del env.files[_file(env, args.path)]


@tool
def make_dir(env: Environment, args: PathArgs) -> None:
    """Create a directory and any missing parents (mkdir -p; an existing directory is fine)."""
    _make_dirs(env, norm(args.path))


@tool
def list_dir(env: Environment, args: PathArgs) -> None:
    """List a directory (no effect on the state; fails if it is not a directory)."""
    if norm(args.path) not in env.dirs:
        raise ToolError(f"no such directory: {norm(args.path)}")


class MoveFileArgs(Args):
    source: str = Field(min_length=1, description="an existing file")
    destination: str = Field(min_length=1, description="the new path of the file (not a directory to move into)")


@tool
def move_file(env: Environment, args: MoveFileArgs) -> None:
    """Rename a file, overwriting a file at `destination` and creating its missing parents."""
    source, destination = _file(env, args.source), norm(args.destination)
    if destination in env.dirs:
        raise ToolError(f"{destination} is a directory")
    _make_dirs(env, _parent(destination))
    env.files[destination] = env.files.pop(source)


# --- git -------------------------------------------------------------------------------------

# git check-ref-format, the parts a tool call can break.
_BAD_REF = re.compile(r"(^[-/.]|\.\.|[\s~^:?*\[\\]|@\{|/$|\.lock$|\.$|//)")


def _ref_name(name: str, kind: str) -> str:
    if _BAD_REF.search(name):
        raise ToolError(f"{name!r} is not a valid {kind} name")
    return name


def _repo(env: Environment, path: str) -> tuple[str, Repo]:
    directory = norm(path)
    if directory not in env.repos:
        raise ToolError(f"not a git repository: {directory}")
    return directory, env.repos[directory]


def _worktree(env: Environment, directory: str) -> dict[str, str]:
    """The repository's files, by path relative to it."""
    prefix = directory.rstrip("/") + "/"
    return {p[len(prefix):]: content for p, content in env.files.items() if p.startswith(prefix)}


def _require_clean(env: Environment, directory: str, repo: Repo, action: str) -> None:
    head = repo.head_tree()
    if repo.index != head:
        raise ToolError(f"cannot {action}: staged changes are not committed")
    work = _worktree(env, directory)
    for path, content in sorted(head.items()):
        if work.get(path) != content:
            raise ToolError(f"cannot {action}: uncommitted changes to {path}")


def _checkout(env: Environment, directory: str, repo: Repo, old: dict[str, str], new: dict[str, str]) -> None:
    """Replace the tracked files of tree `old` in the working tree by those of `new`; the index becomes `new`."""
    work = _worktree(env, directory)
    for path in sorted(new):
        if path not in old and path in work and work[path] != new[path]:
            raise ToolError(f"untracked file {path} would be overwritten")
    for path in sorted(set(old) - set(new)):
        target = norm(path, directory)
        env.files.pop(target, None)
        _prune_empty_dirs(env, target, directory)
    for path, content in sorted(new.items()):
        target = norm(path, directory)
        _make_dirs(env, _parent(target))
        env.files[target] = content
    repo.index = dict(new)


def _ancestors(repo: Repo, commit: str) -> set[str]:
    seen, todo = set(), [commit]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(repo.commits[current].parents)
    return seen


def _merge_base(repo: Repo, ours: str, theirs: str) -> str:
    """The first of their ancestors, breadth first, that is also ours (one exists: both grow from one root)."""
    mine, queue = _ancestors(repo, ours), [theirs]
    for current in queue:
        if current in mine:
            return current
        queue.extend(repo.commits[current].parents)
    raise ToolError("the branches share no history")


def _commit(repo: Repo, parents: tuple[str, ...], message: str, tree: dict[str, str]) -> str:
    commit_id = _id({"parents": parents, "message": message, "tree": tree})
    repo.commits[commit_id] = Commit(parents, message, dict(tree))
    repo.branches[repo.head] = commit_id
    return commit_id


class GitInitArgs(Args):
    path: str = Field(default=".", min_length=1, description="the repository directory (created if missing)")
    initial_branch: str = Field(default="main", min_length=1, description="the name of the first branch")


@tool
def git_init(env: Environment, args: GitInitArgs) -> None:
    """Create an empty repository in a directory (created if missing); its first branch has no commits yet."""
    directory = norm(args.path)
    for existing in env.repos:
        if _under(directory, existing) or _under(existing, directory):
            raise ToolError(f"{directory} is already inside repository {existing}" if existing != directory
                            else f"{directory} is already a git repository")
    _make_dirs(env, directory)
    env.repos[directory] = Repo(head=_ref_name(args.initial_branch, "branch"))


class GitAddArgs(Args):
    repo: str = Field(min_length=1, description="the repository directory")
    paths: list[str] = Field(min_length=1, description='files or directories relative to the repository; "." is all')


@tool
def git_add(env: Environment, args: GitAddArgs) -> None:
    """Stage the current content of files (a directory stages every file under it; a tracked file that
    was deleted is staged as deleted)."""
    directory, repo = _repo(env, args.repo)
    work = _worktree(env, directory)
    staged: dict[str, str | None] = {}
    for spec in args.paths:
        target = norm(spec, directory)
        if not _under(target, directory):
            raise ToolError(f"{spec} is outside repository {directory}")
        inside = target[len(directory):].lstrip("/")
        matches = [p for p in {*work, *repo.index} if not inside or p == inside or p.startswith(inside + "/")]
        if not matches:
            raise ToolError(f"pathspec {spec!r} did not match any files")
        staged.update({p: work.get(p) for p in matches})
    for path, content in staged.items():
        if content is None:
            repo.index.pop(path, None)
        else:
            repo.index[path] = content


class GitCommitArgs(Args):
    repo: str = Field(min_length=1)
    message: str = Field(min_length=1)


@tool
def git_commit(env: Environment, args: GitCommitArgs) -> None:
    """Record the staged tree as a commit on the current branch; its id hashes parent, message and tree."""
    _, repo = _repo(env, args.repo)
    if not args.message.strip():
        raise ToolError("empty commit message")
    if repo.index == repo.head_tree():
        raise ToolError("nothing to commit (nothing staged: git_add first)")
    head = repo.head_commit()
    _commit(repo, (head,) if head else (), args.message, repo.index)


class GitRefArgs(Args):
    repo: str = Field(min_length=1)
    name: str = Field(min_length=1)


@tool
def git_branch(env: Environment, args: GitRefArgs) -> None:
    """Create a branch at the current commit, without switching to it."""
    _, repo = _repo(env, args.repo)
    head = repo.head_commit()
    if head is None:
        raise ToolError(f"branch {repo.head!r} has no commits yet")
    if args.name in repo.branches:
        raise ToolError(f"branch {args.name!r} already exists")
    repo.branches[_ref_name(args.name, "branch")] = head


@tool
def git_tag(env: Environment, args: GitRefArgs) -> None:
    """Tag the current commit."""
    _, repo = _repo(env, args.repo)
    head = repo.head_commit()
    if head is None:
        raise ToolError(f"branch {repo.head!r} has no commits yet")
    if args.name in repo.tags:
        raise ToolError(f"tag {args.name!r} already exists")
    repo.tags[_ref_name(args.name, "tag")] = head


class GitSwitchArgs(Args):
    repo: str = Field(min_length=1)
    branch: str = Field(min_length=1)
    create: bool = Field(default=False, description="create the branch at the current commit first (switch -c)")


@tool
def git_switch(env: Environment, args: GitSwitchArgs) -> None:
    """Make `branch` the current branch (git switch / checkout); with create, make it first (switch -c)."""
    directory, repo = _repo(env, args.repo)
    head = repo.head_commit()
    if args.create:
        if args.branch in repo.branches or args.branch == repo.head:
            raise ToolError(f"branch {args.branch!r} already exists")
        _ref_name(args.branch, "branch")
        if head is not None:  # on an unborn branch only the name changes, as in git
            repo.branches[args.branch] = head
        repo.head = args.branch
        return
    if args.branch == repo.head:
        return
    if args.branch not in repo.branches:
        raise ToolError(f"no branch {args.branch!r}")
    target = repo.branches[args.branch]
    if target != head:  # the working tree changes only when the commit does
        _require_clean(env, directory, repo, f"switch to {args.branch!r}")
        _checkout(env, directory, repo, repo.head_tree(), repo.commits[target].tree)
    repo.head = args.branch


class GitMergeArgs(Args):
    repo: str = Field(min_length=1)
    branch: str = Field(min_length=1, description="the branch merged into the current one")


@tool
def git_merge(env: Environment, args: GitMergeArgs) -> None:
    """Merge a branch into the current one: fast-forward when possible, else a merge commit
    ("Merge branch 'NAME'") if no file changed differently on both sides; a conflict is an error."""
    directory, repo = _repo(env, args.repo)
    if args.branch not in repo.branches:
        raise ToolError(f"no branch {args.branch!r}")
    ours, theirs = repo.head_commit(), repo.branches[args.branch]
    if ours is not None and theirs in _ancestors(repo, ours):
        return  # already up to date
    _require_clean(env, directory, repo, f"merge {args.branch!r}")
    if ours is None or ours in _ancestors(repo, theirs):
        _checkout(env, directory, repo, repo.head_tree(), repo.commits[theirs].tree)
        repo.branches[repo.head] = theirs
        return
    base, mine, other = (repo.commits[c].tree for c in (_merge_base(repo, ours, theirs), ours, theirs))
    merged: dict[str, str] = {}
    for path in sorted({*base, *mine, *other}):
        b, m, o = base.get(path), mine.get(path), other.get(path)
        if m != b and o != b and m != o:
            raise ToolError(f"merge conflict in {path} (the mock does not resolve conflicts)")
        result = o if m == b else m
        if result is not None:
            merged[path] = result
    _checkout(env, directory, repo, mine, merged)
    _commit(repo, (ours, theirs), f"Merge branch '{args.branch}'", merged)


class RepoArgs(Args):
    repo: str = Field(min_length=1)


@tool
def git_status(env: Environment, args: RepoArgs) -> None:
    """Show the repository's status (no effect on the state)."""
    _repo(env, args.repo)


@tool
def git_log(env: Environment, args: RepoArgs) -> None:
    """Show the current branch's history (no effect; fails before the first commit)."""
    _, repo = _repo(env, args.repo)
    if repo.head_commit() is None:
        raise ToolError(f"branch {repo.head!r} has no commits yet")


# --- containers ------------------------------------------------------------------------------

# Docker's image reference, without a registry port: name components, then an optional tag.
_IMAGE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?")
_CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PORTS = re.compile(r"(\d{1,5}):(\d{1,5})")


def image_tag(reference: str) -> str:
    """A reference with its tag made explicit (":latest" if none), as docker reads it."""
    if not _IMAGE.fullmatch(reference):
        raise ToolError(f"invalid image reference {reference!r}")
    return reference if ":" in reference else reference + ":latest"


def _image(env: Environment, reference: str) -> tuple[str, str]:
    tag = image_tag(reference)
    if tag not in env.images:
        raise ToolError(f"no image {tag} (the mock has no registry: docker_build it first)")
    return tag, env.images[tag]


def _instructions(dockerfile: str) -> Iterator[tuple[str, list[str]]]:
    for line in dockerfile.splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            yield words[0].upper(), words[1:]


def _check_dockerfile(env: Environment, path: str, context: str) -> None:
    """What docker would refuse before running anything: no FROM first, or a COPY/ADD source
    missing from the build context."""
    instructions = list(_instructions(env.files[path]))
    first = next((name for name, _ in instructions if name != "ARG"), None)
    if first != "FROM":
        raise ToolError(f"{path}: the first instruction must be FROM")
    for name, words in instructions:
        if name not in ("COPY", "ADD") or any(w.startswith("--from") for w in words):
            continue  # --from copies from another stage, not the context
        words = [w for w in words if not w.startswith("--")]
        if words and words[0].startswith("["):  # the exec form: a JSON array of strings
            try:
                words = json.loads(" ".join(words))
            except json.JSONDecodeError:
                words = None
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise ToolError(f"{path}: {name} has a malformed JSON array")
        if len(words) < 2:
            raise ToolError(f"{path}: {name} needs a source and a destination")
        for source in words[:-1]:
            if "://" in source or any(c in source for c in "*?["):
                continue  # URLs and wildcards are not checked
            resolved = norm(source, context)
            if not _under(resolved, context) or (resolved not in env.files and resolved not in env.dirs):
                raise ToolError(f"{path}: {name} source {source!r} not found in the build context {context}")


class DockerBuildArgs(Args):
    tag: str = Field(min_length=1, description='the image name, e.g. "web:1.0" (":latest" if no tag)')
    context: str = Field(default=".", min_length=1, description="the build context directory")
    dockerfile: str = Field(default="Dockerfile", min_length=1, description="relative to the context")


@tool
def docker_build(env: Environment, args: DockerBuildArgs) -> None:
    """Build an image from a Dockerfile in the file system and tag it; the image id hashes the
    Dockerfile and every file of the context. Rebuilding a tag moves it to the new image."""
    tag = image_tag(args.tag)
    context = norm(args.context)
    if context not in env.dirs:
        raise ToolError(f"no build context directory {context}")
    dockerfile = norm(args.dockerfile, context)
    if dockerfile not in env.files:
        raise ToolError(f"no Dockerfile at {dockerfile}")
    _check_dockerfile(env, dockerfile, context)
    env.images[tag] = _id({"dockerfile": env.files[dockerfile],
                           "context": {p: c for p, c in sorted(env.files.items()) if _under(p, context)}})


class DockerRunArgs(Args):
    image: str = Field(min_length=1, description="a built image's tag")
    name: str = Field(default="", description='the container name ("": container-N)')
    ports: list[str] = Field(default_factory=list, description='published ports, "HOST:CONTAINER"')


@tool
def docker_run(env: Environment, args: DockerRunArgs) -> None:
    """Start a container of a built image, detached: id "cN" (N counts the containers started),
    state running. Names and published host ports must be free."""
    tag, image_id = _image(env, args.image)
    number = env.containers_started + 1
    name = args.name or f"container-{number}"
    if not _CONTAINER_NAME.fullmatch(name):
        raise ToolError(f"invalid container name {name!r}")
    if any(c.name == name for c in env.containers.values()):
        raise ToolError(f"container name {name!r} is already in use")
    taken = {p.split(":")[0] for c in env.containers.values() if c.state == "running" for p in c.ports}
    for mapping in args.ports:
        match = _PORTS.fullmatch(mapping)
        if not match or not all(1 <= int(port) <= 65535 for port in match.groups()):
            raise ToolError(f"invalid port mapping {mapping!r} (HOST:CONTAINER)")
        if match.group(1) in taken:
            raise ToolError(f"host port {match.group(1)} is already allocated")
        taken.add(match.group(1))
    env.containers_started = number
    env.containers[f"c{number}"] = Container(name, tag, image_id, tuple(args.ports), "running")


class ContainerArgs(Args):
    container: str = Field(min_length=1, description="a container's id or name")


def _container(env: Environment, reference: str) -> Container:
    for container_id, container in env.containers.items():
        if reference in (container_id, container.name):
            return container
    raise ToolError(f"no container {reference!r}")


@tool
def docker_stop(env: Environment, args: ContainerArgs) -> None:
    """Stop a container (state exited; stopping a stopped one does nothing, as in docker)."""
    _container(env, args.container).state = "exited"


@tool
def docker_rm(env: Environment, args: ContainerArgs) -> None:
    """Remove a stopped container (a running one is an error: docker_stop it first)."""
    container = _container(env, args.container)
    if container.state == "running":
        raise ToolError(f"container {container.name!r} is running: docker_stop it first")
    env.containers = {cid: c for cid, c in env.containers.items() if c is not container}


class NoArgs(Args):
    pass


@tool
def docker_ps(env: Environment, args: NoArgs) -> None:
    """List containers (no effect on the state)."""


# --- deployments -----------------------------------------------------------------------------

def _deployment(env: Environment, environment: str) -> Deployment:
    if environment not in env.deployments:
        raise ToolError(f"nothing is deployed to {environment!r}")
    return env.deployments[environment]


class DeployArgs(Args):
    environment: str = Field(min_length=1, description='e.g. "staging"')
    image: str = Field(min_length=1, description="a built image's tag")
    replicas: int = Field(default=1, ge=1)


@tool
def deploy(env: Environment, args: DeployArgs) -> None:
    """Deploy a built image to an environment with a number of replicas. The version it replaces goes
    on the environment's history; redeploying the image already running only sets the replicas."""
    tag, image_id = _image(env, args.image)
    current = env.deployments.get(args.environment)
    if current is None:
        env.deployments[args.environment] = Deployment(tag, image_id, args.replicas)
        return
    if current.image_id != image_id:
        current.history.append((current.image, current.image_id))
        current.image, current.image_id = tag, image_id
    current.replicas = args.replicas


class ScaleArgs(Args):
    environment: str = Field(min_length=1)
    replicas: int = Field(ge=0)


@tool
def scale(env: Environment, args: ScaleArgs) -> None:
    """Set a deployment's replicas (its version and history are unchanged)."""
    _deployment(env, args.environment).replicas = args.replicas


class EnvironmentArgs(Args):
    environment: str = Field(min_length=1)


@tool
def rollback(env: Environment, args: EnvironmentArgs) -> None:
    """Go back to the version deployed before the current one (taken off the history, so a second
    rollback goes further back); the replicas stay."""
    current = _deployment(env, args.environment)
    if not current.history:
        raise ToolError(f"{args.environment!r} has no previous version to roll back to")
    current.image, current.image_id = current.history.pop()


@tool
def deployment_status(env: Environment, args: EnvironmentArgs) -> None:
    """Show a deployment (no effect on the state; fails if nothing is deployed there)."""
    _deployment(env, args.environment)
