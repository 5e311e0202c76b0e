"""A sandbox for untrusted code: run one program with limits, confined, and clean up every process it started.

`run_sandboxed(argv, files, limits)` starts this very file as a small launcher (`python -I -S sandbox.py CONFIG`,
standard library only, so it runs before and outside anything the program can touch). The launcher confines itself,
starts the program and reports how it ended on a status pipe; the calling process reads stdout and stderr with a
cap, enforces the wall clock and removes the scratch directory. docs/sandbox.md says what each mode protects against
and what it does not.

Two modes, the strongest the kernel allows chosen once per process (`protections()` names what is in force):
- "namespaces": new mount, network, PID, IPC and UTS namespaces (inside a user namespace when we are not root). The
  whole filesystem is remounted read-only, nosuid, nodev, /tmp /var/tmp /run /dev/shm are replaced by empty
  read-only tmpfs (hiding other programs' sockets and files), and the scratch directory is the one writable mount.
  The network namespace has only a loopback that is down. The program's parent is a tiny init, PID 1 of the
  namespace: when it exits the kernel kills every process left in the namespace, daemons that setsid() included.
- "basic": no namespaces (the kernel or a container refused them). Limits, own session, empty environment, and a
  child subreaper launcher that kills every leftover descendant; writes and the network are only stopped where the
  program runs as an unprivileged user that may not write the place (root runs it as nobody when it can).
In both, the program runs with rlimits (CPU, address space, processes, file size, open files, no core files),
no_new_privs, stdin /dev/null and an empty environment; when we are root, as nobody (root ignores RLIMIT_NPROC and
may write anywhere) unless basic mode cannot reach the interpreter as nobody.
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import os
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Status = Literal["ok", "error", "timeout", "memory_limit", "output_limit", "killed"]
Mode = Literal["namespaces", "basic"]

# The names protections() returns; each is a guarantee the tests assert when (and only when) it is listed.
WRITES_CONFINED = "writes-confined-to-scratch"   # nothing outside the scratch dir is writable (read-only mounts)
WRITES_UNPRIVILEGED = "writes-as-unprivileged-user"  # runs as nobody: only world-writable places are writable
NO_NETWORK = "no-network"                         # own network namespace: no interface but a loopback that is down
DESCENDANTS_KILLED = "descendants-killed"         # every process it started is gone when run_sandboxed returns
PROCESS_LIMIT = "process-limit"                   # Limits.processes is enforced (RLIMIT_NPROC on a non-root uid)
HOST_PROCESSES_HIDDEN = "host-processes-hidden"   # own PID namespace: it cannot see or signal anything outside
RLIMITS = "rlimits"                               # CPU, address space, file size, open files
# Basic mode only, and only for Python programs started without -I/-E/-S (it comes in through PYTHONPATH): an audit
# hook refuses, at the Python level, writes outside the scratch dir, sockets that connect/bind/send, starting other
# programs, ctypes, and signalling processes outside its group. Python code can get around audit hooks (they are
# not a security boundary, see docs/sandbox.md); it stops ordinary library calls, not a determined attacker.
PYTHON_AUDIT_HOOK = "python-audit-hook"

NOBODY = 65534  # the uid/gid root runs the program as: not root (so RLIMIT_NPROC holds) and owning nothing

# The sitecustomize.py that basic mode puts on the program's PYTHONPATH. The cwd at start-up is the scratch dir.
_AUDIT_HOOK_SOURCE = r'''"""hrm sandbox (basic mode): refuse at the Python level what the kernel does not stop here."""
import os
import sys


def _install():
    scratch = os.path.realpath(os.getcwd())
    group = os.getpgid(0)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    realpath, fspath, isinstance_, str_, bytes_ = os.path.realpath, os.fspath, isinstance, str, bytes
    refused = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile",
                         "pty.spawn", "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.cdata",
                         "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"})
    path_events = {"os.remove": (0,), "os.rename": (0, 1), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,),
                   "os.chown": (0,), "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,), "os.utime": (0,),
                   "os.mkfifo": (0,), "os.mknod": (0,), "shutil.rmtree": (0,)}

    devices = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})  # writing these writes no file

    def outside(path):
        if not isinstance_(path, (str_, bytes_, os.PathLike)):
            return False  # a file descriptor: opened already
        name = os.fsdecode(fspath(path))
        if name in devices:
            return False
        full = realpath(name)
        return full != scratch and not full.startswith(scratch + os.sep)

    def hook(event, args):
        if event in refused:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & write_flags)
            if writing and outside(path):
                raise PermissionError(f"sandbox: writing outside the scratch directory: {path!r}")
        elif event in path_events:
            for i in path_events[event]:
                if i < len(args) and outside(args[i]):
                    raise PermissionError(f"sandbox: {event} outside the scratch directory: {args[i]!r}")
        elif event == "os.kill":
            pid = args[0]
            if pid <= 0 or (pid != os.getpid() and os.getpgid(pid) != group):
                raise PermissionError("sandbox: signalling a process outside the program's group")
        elif event == "os.killpg" and args[0] != group:
            raise PermissionError("sandbox: signalling a process group other than the program's")

    sys.addaudithook(hook)


_install()
del _install
'''

# Memory exhaustion as programs report it: Python's MemoryError, C/C++ allocation failures.
_MEMORY_MARKERS = (b"MemoryError", b"Cannot allocate memory", b"std::bad_alloc", b"out of memory")


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (not the program's fault)."""


@dataclass(frozen=True)
class Limits:
    cpu_seconds: float = 10.0        # RLIMIT_CPU of every process (then SIGXCPU/SIGKILL)
    wall_seconds: float = 20.0       # then the whole process group is killed
    memory_bytes: int = 1 << 30      # RLIMIT_AS
    processes: int = 64              # RLIMIT_NPROC: per run in namespace mode, per uid in basic (docs/sandbox.md)
    file_bytes: int = 16 << 20       # RLIMIT_FSIZE
    open_files: int = 64             # RLIMIT_NOFILE
    output_bytes: int = 1 << 20      # stdout and stderr, each: beyond it the run is stopped


@dataclass(frozen=True)
class Outcome:
    status: Status
    returncode: int | None           # None if killed by a signal
    signal: int | None
    stdout: bytes                    # at most output_bytes each
    stderr: bytes
    wall_seconds: float
    cpu_seconds: float               # children's CPU time


# ---------------------------------------------------------------------------------------------------------------
# Kernel interfaces Python 3.11 lacks (unshare, mount, mount_setattr, prctl), through libc.

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 1, 2, 4
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added in Linux 5.12, after the syscall table merge)
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags: int) -> None:
    _check(_libc().unshare(ctypes.c_int(flags)), "unshare")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _check(_libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _mount_setattr(path: str, *, recursive: bool, set_: int = 0, clear: int = 0) -> None:
    attr = _MountAttr(set_, clear, 0, 0)
    _check(_libc().syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD), path.encode(),
                           ctypes.c_uint(_AT_RECURSIVE if recursive else 0), ctypes.byref(attr),
                           ctypes.c_size_t(ctypes.sizeof(attr))), f"mount_setattr {path}")


def _prctl(option: int, value: int) -> None:
    _check(_libc().prctl(ctypes.c_int(option), ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                         ctypes.c_ulong(0)), f"prctl {option}")


# ---------------------------------------------------------------------------------------------------------------
# The launcher: everything below up to run_sandboxed runs in the child `python -I -S sandbox.py CONFIG`.

# Host places replaced by empty read-only tmpfs in namespace mode: where other programs keep sockets (Ray's, the
# D-Bus session bus, ...) and shared memory, which a read-only mount alone would leave connectable.
_HIDDEN_DIRS = ("/tmp", "/var/tmp", "/run", "/dev/shm")


def _write(fd: int, line: str) -> None:
    os.write(fd, (line.rstrip("\n") + "\n").encode())


def _hidden_ancestor(path: str) -> str | None:
    """The first directory above `path` that nobody may not traverse (e.g. /root, mode 0700), if any."""
    parts = Path(path).parts
    for i in range(1, len(parts)):
        d = os.path.join(*parts[:i])
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return d
    return None


def _graft(source: str, target: str, tmpfs_dirs: list[str]) -> None:
    """Bind `source` (a host path, resolved before anything was hidden) at `target`, creating the mount point (and
    any tmpfs needed to hold it) first."""
    fd = os.open(source, os.O_PATH | os.O_CLOEXEC)
    try:
        while True:
            hidden = _hidden_ancestor(target) if os.geteuid() == 0 and os.path.exists(target) else None
            if hidden is None:
                break
            # root runs the program as nobody: a 0700 directory on the way (e.g. /root holding the interpreter)
            # becomes a tmpfs holding only the path to it.
            _mount("tmpfs", hidden, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
            tmpfs_dirs.append(hidden)
        if not os.path.exists(target):
            os.makedirs(target, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC)
    finally:
        os.close(fd)


def _confine_filesystem(scratch: str, readable: Sequence[str]) -> None:
    """Make / read-only, hide the places holding other programs' sockets, and make the scratch directory the only
    writable place (its /proc comes later, from the namespace's init)."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we do here propagates back to the host
    _mount_setattr("/", recursive=True, set_=_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV)
    if os.path.ismount("/dev"):
        # /dev/null, /dev/urandom... stay usable (device nodes elsewhere do not); writing a device is not writing
        # to the file system, so a read-only /dev still lets the program write /dev/null and nothing else.
        _mount_setattr("/dev", recursive=True, clear=_MOUNT_ATTR_NODEV)
    tmpfs_dirs: list[str] = []
    # Bind the scratch dir and the interpreter's trees before /tmp (which usually holds the scratch dir) is hidden:
    # stash them as O_PATH fds and graft them after.
    keep = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in [scratch, *readable] if os.path.exists(p)}
    # root runs the program as nobody: what lies under a directory nobody may not traverse must be grafted too.
    hidden = {p for p in keep if os.geteuid() == 0 and _hidden_ancestor(p) is not None}
    try:
        for d in _HIDDEN_DIRS:
            if os.path.isdir(d) and not os.path.islink(d):
                _mount("tmpfs", d, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
                tmpfs_dirs.append(d)
        for path, fd in keep.items():
            under_tmpfs = any(path == d or path.startswith(d + "/") for d in tmpfs_dirs)
            if path != scratch and not under_tmpfs and path not in hidden:
                continue  # reachable as it is
            _graft(f"/proc/self/fd/{fd}", path, tmpfs_dirs)
    finally:
        for fd in keep.values():
            os.close(fd)
    for d in tmpfs_dirs:
        _mount_setattr(d, recursive=False, set_=_MOUNT_ATTR_RDONLY)
    _mount_setattr(scratch, recursive=False, clear=_MOUNT_ATTR_RDONLY)


def _count_tasks(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) of `uid` on the host, for basic mode's limit."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
            if int(fields[b"Uid"].split()[0]) == uid:
                total += int(fields[b"Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return total


def _apply_limits(limits: dict, nproc: int) -> None:
    cpu = max(1, math.ceil(limits["cpu_seconds"]))
    # SIGXCPU at the soft limit, SIGKILL one second later if the program ignores it.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _own_user_namespace(uid: int, gid: int) -> None:
    """A user namespace of the program's own, mapping only its uid: RLIMIT_NPROC is then counted per namespace
    (Linux >= 5.14), so the limit is this run's processes alone, not every process of the user. Inside, the program
    is never uid 0 (root in a container without nobody is seen as nobody), so exec leaves it no capabilities."""
    inside_uid, inside_gid = uid or NOBODY, gid or NOBODY
    _unshare(_CLONE_NEWUSER)
    # A non-dumpable process's /proc files belong to root, and changing uid or forking from the (non-dumpable)
    # init leaves us non-dumpable: be dumpable to write our own maps (exec resets this anyway).
    _prctl(_PR_SET_DUMPABLE, 1)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{inside_uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{inside_gid} {gid} 1")


def _exec_program(cfg: dict, status_fd: int, *, own_group: bool) -> None:
    """In the forked child: become the program. Never returns."""
    try:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)  # ignored signals would stay ignored across exec
        if own_group:
            os.setpgid(0, 0)
        uid, gid = cfg["uid"], cfg["gid"]
        if os.geteuid() == 0 and uid != 0:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        nproc = cfg["limits"]["processes"]
        if cfg["mode"] == "namespaces":
            # Before lowering RLIMIT_NPROC: a user namespace records the limit it starts with for its parent's count.
            _own_user_namespace(uid, gid)
        else:
            # Outside a namespace RLIMIT_NPROC counts every task of the uid: allow the ones it has now (this one
            # included, hence -1) plus the program's share. Approximate: the uid's other processes come and go.
            nproc += _count_tasks(os.getuid()) - 1
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        _apply_limits(cfg["limits"], nproc)
        os.chdir(cfg["scratch"])
    except BaseException as e:  # noqa: BLE001 - the sandbox failing, not the program
        try:
            _write(status_fd, f"error sandbox: preparing the program: {e}")
        finally:
            os._exit(127)
    try:
        os.execve(cfg["executable"], cfg["argv"], cfg["env"])
    except BaseException as e:  # noqa: BLE001 - e.g. a missing script interpreter: the program's own failure
        try:
            _write(status_fd, f"error cannot start {cfg['argv'][0]}: {e}")
        finally:
            os._exit(127)


def _report(status_fd: int, wait_status: int, rusage: resource.struct_rusage) -> None:
    cpu = rusage.ru_utime + rusage.ru_stime
    if os.WIFSIGNALED(wait_status):
        _write(status_fd, f"signal {os.WTERMSIG(wait_status)} {cpu}")
    else:
        _write(status_fd, f"exit {os.waitstatus_to_exitcode(wait_status)} {cpu}")


def _namespace_init(cfg: dict, status_fd: int) -> None:
    """PID 1 of the sandbox's PID namespace: start the program, reap everything, report the program's end, exit.
    Its exit makes the kernel SIGKILL every process still in the namespace. Never returns."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # PID 1 ignores default-handled signals sent from inside
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the launcher gone, the namespace goes too
        _prctl(_PR_SET_DUMPABLE, 0)  # the program (same uid when we are not root) may not ptrace its init
        # A /proc of this PID namespace: the program sees its own processes only.
        _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
        if cfg.get("probe"):
            child = os.fork()
            if child == 0:
                try:
                    uid, gid = cfg["uid"], cfg["gid"]
                    if os.geteuid() == 0 and uid != 0:
                        os.setgroups([])
                        os.setresgid(gid, gid, gid)
                        os.setresuid(uid, uid, uid)
                    _own_user_namespace(uid, gid)
                except BaseException:  # noqa: BLE001
                    os._exit(1)
                os._exit(0)
            _, st = os.waitpid(child, 0)
            _write(status_fd, "probe ok" if st == 0 else "probe failed: no user namespace for the program")
            os._exit(0)
        program = os.fork()
        if program == 0:
            _exec_program(cfg, status_fd, own_group=False)
        # The launcher's stop: kill every process of the namespace at once (one by one, a fork bomb would fill the
        # slot each death frees), then reap the program here so its CPU time is reported (killing init directly
        # would lose it). The program may send this too; it only kills itself and its own.
        signal.signal(signal.SIGUSR1, lambda signum, frame: _signal(-1, signal.SIGKILL))
        while True:
            pid, st, rusage = os.wait4(-1, 0)
            if pid == program:
                _report(status_fd, st, rusage)
                os._exit(0)
    except BaseException as e:  # noqa: BLE001
        _write(status_fd, f"error sandbox init: {e}")
        os._exit(1)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    # the command name (field 2) may hold spaces and parentheses: ppid is after the last ')'
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _kill_descendants() -> None:
    """Basic mode: as a child subreaper every orphaned descendant is re-parented to us; kill and reap until none."""
    while True:
        for child in _children(os.getpid()):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        time.sleep(0.005)


def _launch(cfg: dict) -> None:
    status_fd = cfg["status_fd"]
    os.set_inheritable(status_fd, False)  # the program must not be able to write a status of its own
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the caller died: take the sandbox with it
    if os.getppid() != cfg["parent_pid"]:
        os._exit(1)
    # The caller's stop (SIGTERM) may come at any time, even before the program exists: remember it until then.
    child: list[int] = []
    stopped: list[bool] = []

    def on_term(signum: int, frame: object) -> None:
        stopped.append(True)
        if child:
            stop_program()

    def stop_program() -> None:
        try:
            if cfg["mode"] == "namespaces":
                # init kills and reaps the program, reports, and exits, which empties the namespace; should it not
                # have within a second, kill init itself.
                os.kill(child[0], signal.SIGUSR1)
                signal.signal(signal.SIGALRM, lambda signum, frame: _signal(child[0], signal.SIGKILL))
                signal.setitimer(signal.ITIMER_REAL, 1.0)
            else:
                os.killpg(child[0], signal.SIGKILL)  # the program's group; basic mode sweeps the rest after
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, on_term)
    try:
        if cfg["mode"] == "namespaces":
            if os.geteuid() != 0:
                uid, gid = os.getuid(), os.getgid()
                _unshare(_CLONE_NEWUSER)
                for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                    with open(f"/proc/self/{name}", "w") as f:
                        f.write(text)
            _prctl(_PR_SET_DUMPABLE, 0)  # from here on holding privileges the program must not borrow (ptrace)
            _unshare(_CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWUTS)
            _confine_filesystem(cfg["scratch"], cfg["readable"])
            pid = os.fork()
            if pid == 0:
                _namespace_init(cfg, status_fd)
        else:
            _prctl(_PR_SET_CHILD_SUBREAPER, 1)
            pid = os.fork()
            if pid == 0:
                _exec_program(cfg, status_fd, own_group=True)
            _write(status_fd, f"group {pid}")  # for the caller to kill should the program kill us first
    except BaseException as e:  # noqa: BLE001
        _write(status_fd, f"error sandbox setup ({cfg['mode']}): {e}")
        os._exit(1)
    child.append(pid)
    if stopped:
        stop_program()
    _, st, rusage = os.wait4(pid, 0)
    if cfg["mode"] == "basic" or os.WIFSIGNALED(st):  # a killed init reported nothing
        _report(status_fd, st, rusage)
    if cfg["mode"] == "basic":
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _kill_descendants()
    os._exit(0)


# ---------------------------------------------------------------------------------------------------------------
# The caller's side.

def _launcher_cmd(cfg: dict, config_file: Path) -> list[str]:
    """The launcher's command line; its configuration goes in a file (one argument is limited to 128 KiB, and the
    program's own argv may be longer)."""
    with open(os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        json.dump(cfg, f)
    # -I: no user site, no PYTHON* variables, no script dir on sys.path; -S: no site-packages (stdlib only).
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(config_file)]


def _target_ids(executable: str, readable: Sequence[str], mode: Mode) -> tuple[int, int]:
    """Who the program runs as: ourselves unless we are root; then nobody (root ignores RLIMIT_NPROC and may write
    anything) - if this user namespace has a nobody (a container's may not), and in basic mode only if nobody can
    reach the interpreter's files, since nothing can be grafted."""
    if os.geteuid() != 0 or not (_mapped("uid", NOBODY) and _mapped("gid", NOBODY)):
        return os.getuid(), os.getgid()
    if mode == "basic" and any(_hidden_ancestor(p) for p in [executable, *readable]):
        return 0, 0
    return NOBODY, NOBODY


def _id_map(kind: str) -> list[tuple[int, int, int]]:
    """This process's user namespace's uid or gid map: (first id inside, first id outside, count) ranges."""
    with open(f"/proc/self/{kind}_map") as f:
        return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in f if line.strip())]


def _mapped(kind: str, inside: int) -> bool:
    return any(first <= inside < first + count for first, _, count in _id_map(kind))


def _host_root() -> bool:
    """Whether uid 0 here is the host's root (whom RLIMIT_NPROC does not bind), not a container's mapped root."""
    return os.geteuid() == 0 and any(first == 0 and outside == 0 for first, outside, _ in _id_map("uid"))


def _readable_paths(executable: str, extra: Sequence[str | os.PathLike]) -> list[str]:
    paths = {os.path.dirname(os.path.realpath(executable))}
    if _is_python(executable):
        paths |= {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths |= {os.path.realpath(p) for p in extra}
    return sorted(p for p in paths if os.path.exists(p))


@functools.cache
def _namespaces_work() -> bool:
    """Probe once per process: set a sandbox up in namespace mode, with the program's own user namespace."""
    scratch = tempfile.mkdtemp(prefix="hrm-sandbox-probe-")
    r, w = os.pipe()
    try:
        readable = _readable_paths(sys.executable, ())
        uid, gid = _target_ids(sys.executable, readable, "namespaces")
        if (uid, gid) != (os.getuid(), os.getgid()):
            os.chown(scratch, uid, gid)
        cfg = {"mode": "namespaces", "probe": True, "status_fd": w, "parent_pid": os.getpid(), "scratch": scratch,
               "readable": readable, "uid": uid, "gid": gid}
        proc = subprocess.run(_launcher_cmd(cfg, Path(scratch) / "launcher.json"), stdin=subprocess.DEVNULL,
                              capture_output=True, pass_fds=(w,), env={}, timeout=30, start_new_session=True)
        os.close(w)
        w = -1
        with os.fdopen(r, "rb") as f:
            r = -1
            report = f.read()
        return proc.returncode == 0 and report.startswith(b"probe ok")
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(scratch, ignore_errors=True)


def namespaces_available() -> bool:
    """Whether this kernel (and container) lets run_sandboxed use namespace mode."""
    return _namespaces_work()


def _resolve_mode(mode: Literal["auto", "namespaces", "basic"]) -> Mode:
    if mode == "auto":
        return "namespaces" if _namespaces_work() else "basic"
    if mode == "namespaces" and not _namespaces_work():
        raise SandboxError("namespace mode requested but this kernel/container refuses user or mount namespaces")
    return mode


def protections(mode: Literal["auto", "namespaces", "basic"] = "auto", executable: str = sys.executable,
                ) -> list[str]:
    """What run_sandboxed guarantees here for a program run by `executable` (the default: this interpreter), in
    `mode` (by default the one run_sandboxed would choose), for tests to assert and a report to state."""
    resolved = _resolve_mode(mode)
    if resolved == "namespaces":
        return [RLIMITS, PROCESS_LIMIT, WRITES_CONFINED, NO_NETWORK, DESCENDANTS_KILLED, HOST_PROCESSES_HIDDEN]
    found = [RLIMITS]
    uid, _ = _target_ids(executable, _readable_paths(executable, ()), "basic")
    if uid != 0 or not _host_root():
        found.append(PROCESS_LIMIT)
    if os.geteuid() == 0 and uid != 0:
        # Unprivileged as nobody, and unable to signal the root launcher, which then kills every descendant.
        found += [WRITES_UNPRIVILEGED, DESCENDANTS_KILLED]
    if _is_python(executable):
        found.append(PYTHON_AUDIT_HOOK)
    return found


def _is_python(executable: str) -> bool:
    return os.path.basename(executable).startswith("python")


def _write_files(scratch: Path, files: Mapping[str, bytes]) -> None:
    for name, content in files.items():
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"sandbox file {name!r}: must be a relative path inside the scratch directory")
        path = scratch / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _classify(report: str, stderr: bytes, limits: Limits, *, timed_out: bool,
              output_capped: bool) -> tuple[Status, int | None, int | None]:
    kind, _, rest = report.partition(" ")
    returncode: int | None = None
    signum: int | None = None
    if kind == "exit":
        returncode = int(rest.split()[0])
    elif kind == "signal":
        signum = int(rest.split()[0])
    if output_capped:
        return "output_limit", returncode, signum
    if timed_out:
        return "timeout", returncode, signum
    cpu = float(rest.split()[1]) if kind in ("exit", "signal") else 0.0
    if signum == signal.SIGXCPU or (signum == signal.SIGKILL and cpu >= math.ceil(limits.cpu_seconds)):
        return "timeout", returncode, signum
    if returncode == 0:
        return "ok", returncode, signum
    # The allocation failure ends the error output (a traceback's last line, an abort message), so look at its end:
    # a program merely printing the word earlier is not out of memory.
    if any(marker in stderr[-512:] for marker in _MEMORY_MARKERS):
        return "memory_limit", returncode, signum
    if signum is not None:
        return "killed", returncode, signum
    return "error", returncode, signum


def run_sandboxed(argv: list[str], files: Mapping[str, bytes] = {}, limits: Limits = Limits(), *,
                  mode: Literal["auto", "namespaces", "basic"] = "auto",
                  readable: Sequence[str | os.PathLike] = ()) -> Outcome:
    """Run argv (argv[0] resolved on the host PATH, e.g. sys.executable) in a fresh scratch directory holding
    `files` (relative paths), which is its cwd and its only writable place; stdin closed; empty environment
    (apart from what the sandbox itself must set, e.g. PATH to the interpreter's directory, HOME=scratch, LANG=C.UTF-8);
    its own session and process group; every process it started killed at the end; the scratch directory removed.

    `mode` picks the confinement ("auto": namespaces when the kernel allows them); `readable` names host paths the
    program must read that an unprivileged user could not reach (the interpreter's own trees are added).
    """
    if not argv:
        raise ValueError("sandbox argv is empty")
    executable = argv[0] if os.sep in argv[0] else shutil.which(argv[0])
    if executable is None or not os.access(executable, os.X_OK):
        raise FileNotFoundError(f"sandbox program {argv[0]!r} not found on PATH or not executable")
    executable = os.path.abspath(executable)
    resolved = _resolve_mode(mode)
    paths = _readable_paths(executable, readable)
    uid, gid = _target_ids(executable, paths, resolved)
    # <tmp>/hrm-sandbox-X/work is the scratch dir; basic mode's audit hook lies beside it, outside its reach.
    top = Path(tempfile.mkdtemp(prefix="hrm-sandbox-"))
    scratch = top / "work"
    r = w = -1
    try:
        top.chmod(0o755)  # for nobody to reach work/ (root's mkdtemp is 0700)
        scratch.mkdir(mode=0o700)
        _write_files(scratch, files)
        if (uid, gid) != (os.getuid(), os.getgid()):
            _chown_tree(scratch, uid, gid)
        bin_dir = os.path.dirname(executable)
        env = {"PATH": ":".join(dict.fromkeys([bin_dir, "/usr/bin", "/bin"])), "HOME": str(scratch),
               "TMPDIR": str(scratch), "LANG": "C.UTF-8"}
        if resolved == "basic" and _is_python(executable):
            hook = top / "hook"
            hook.mkdir(mode=0o755)
            (hook / "sitecustomize.py").write_text(_AUDIT_HOOK_SOURCE)
            env["PYTHONPATH"] = str(hook)
        r, w = os.pipe()
        cfg = {"mode": resolved, "status_fd": w, "parent_pid": os.getpid(), "scratch": str(scratch),
               "readable": paths, "uid": uid, "gid": gid, "limits": asdict(limits), "executable": executable,
               "argv": list(argv), "env": env}
        command = _launcher_cmd(cfg, top / "launcher.json")
        start = time.monotonic()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(w,), env={}, cwd=scratch, start_new_session=True)
        os.close(w)
        w = -1
        return _supervise(proc, r, limits, start)
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(top, ignore_errors=True)


def _supervise(proc: subprocess.Popen, status_r: int, limits: Limits, start: float) -> Outcome:
    """Read stdout/stderr (each capped) and the status pipe until the launcher exits; stop it at the deadline."""
    assert proc.stdout is not None and proc.stderr is not None
    deadline = start + limits.wall_seconds
    out = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}  # stdout first, then stderr
    status = bytearray()
    sel = selectors.DefaultSelector()
    for fd in (*out, status_r):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    # A pidfd wakes the loop the moment the launcher exits (Linux >= 5.3); else poll every 50 ms.
    try:
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ)
    except (AttributeError, OSError):
        pidfd = -1
    timed_out = output_capped = stopping = False
    exited: tuple[int, resource.struct_rusage | None] | None = None
    stop_sent = drain_until = 0.0
    try:
        while True:
            if exited is None:
                try:
                    pid, st, rusage = os.wait4(proc.pid, os.WNOHANG)
                except ChildProcessError:  # reaped behind our back (the caller ignores SIGCHLD): the status pipe tells
                    pid, st, rusage = proc.pid, 0, None
                if pid:
                    exited = (st, rusage)
                    drain_until = time.monotonic() + 0.5  # what is still in the pipes; no writer should be left
                    if pidfd >= 0:
                        sel.unregister(pidfd)
            now = time.monotonic()
            if exited is not None and (not sel.get_map() or now >= drain_until):
                break
            if not stopping and exited is None and now >= deadline:
                timed_out = stopping = True
            if stopping and exited is None:
                if not stop_sent:
                    stop_sent = now
                    _signal(proc.pid, signal.SIGTERM)  # the launcher kills the program and everything it started
                elif now - stop_sent > 2.0:
                    _signal(-proc.pid, signal.SIGKILL)
            if exited is not None:
                timeout = max(0.0, drain_until - now)
            elif stopping:
                timeout = 0.05
            else:
                timeout = max(0.0, deadline - now) if pidfd >= 0 else min(0.05, max(0.0, deadline - now))
            for key, _ in sel.select(timeout):
                fd = key.fd
                if fd == pidfd:
                    continue  # exited: collected at the top of the loop
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                if fd == status_r:
                    status += chunk
                    continue
                buf = out[fd]
                room = limits.output_bytes - len(buf)
                buf += chunk[:max(room, 0)]
                if len(chunk) > room and not stopping:
                    output_capped = stopping = True
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    sel.close()
    proc.stdout.close()
    proc.stderr.close()
    wall = time.monotonic() - start
    st, rusage = exited
    proc.returncode = os.waitstatus_to_exitcode(st)
    _signal(-proc.pid, signal.SIGKILL)  # anything left in the launcher's group (there should be nothing)
    report = status.decode(errors="replace").strip().splitlines()
    setup_error = next((line for line in report if line.startswith("error sandbox")), None)
    if setup_error:
        raise SandboxError(setup_error.removeprefix("error ").strip())
    final = next((line for line in reversed(report) if line.split(" ", 1)[0] in ("exit", "signal", "error")), "")
    stdout, stderr = (bytes(buf) for buf in out.values())
    for line in report:
        if line.startswith("group "):  # basic mode: the program's group, in case the launcher was killed first
            _kill_group_and_wait(int(line.split()[1]))
    for line in report:
        if line.startswith("error cannot start"):  # exec failed (then the child exits 127, reported after this)
            stderr = (stderr + line.removeprefix("error ").encode() + b"\n")[: limits.output_bytes]
            if final == line:
                final = "exit 127 0"
    if not final:
        # The launcher died without a report: only something killing it (our SIGKILL after the grace period, or
        # the program killing its parent in basic mode) gets here.
        final = f"signal {-proc.returncode} 0" if proc.returncode < 0 else f"exit {proc.returncode} 0"
    state, returncode, signum = _classify(final, stderr, limits, timed_out=timed_out, output_capped=output_capped)
    fields = final.split()
    cpu = float(fields[2]) if len(fields) > 2 else 0.0
    if cpu == 0.0 and rusage is not None:
        cpu = rusage.ru_utime + rusage.ru_stime
    return Outcome(status=state, returncode=returncode, signal=signum, stdout=stdout, stderr=stderr,
                   wall_seconds=wall, cpu_seconds=cpu)


def _kill_group_and_wait(pgid: int, patience: float = 2.0) -> None:
    """SIGKILL a process group and wait until it is gone (orphans are reaped by whoever adopted them)."""
    end = time.monotonic() + patience
    while time.monotonic() < end:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)


def _signal(pid: int, signum: int) -> None:
    """kill(2) that tolerates the target being gone: pid > 0 a process, -1 all we may signal, < -1 a group."""
    try:
        if pid < -1:
            os.killpg(-pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    with open(sys.argv[1]) as config:
        _launch(json.load(config))
