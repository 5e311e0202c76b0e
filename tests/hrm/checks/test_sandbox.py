"""The sandbox against hostile programs, in every mode this machine offers.

Each hostile test asserts the status it must end with, that it ended within its limits, that no process of the run
is left (every process carries a unique marker in its command line, searched for in /proc), and, where it tries to,
that nothing was written outside the scratch directory. A guarantee the mode in force does not give (protections()
does not list it) is not tested by running the hostile program unprotected: the test is skipped saying which.
"""

import dataclasses
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

from hrm.checks import sandbox
from hrm.checks.sandbox import Limits, Outcome, run_sandboxed

# Small limits so each hostile program is stopped quickly; the margin absorbs a busy two-core machine.
WALL = 2.0
MARGIN = 2.0
FAST = Limits(cpu_seconds=1, wall_seconds=WALL, memory_bytes=256 << 20, processes=8, file_bytes=1 << 20,
              open_files=32, output_bytes=64 << 10)


@pytest.fixture(params=["namespaces", "basic"])
def mode(request: pytest.FixtureRequest) -> str:
    if request.param == "namespaces" and not sandbox.namespaces_available():
        pytest.skip("this kernel or container refuses user/mount namespaces: namespace mode unavailable")
    return request.param


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def run_python(code: str, mode: str, limits: Limits = FAST, files: dict[str, bytes] | None = None,
               ) -> tuple[Outcome, str]:
    """Run `code` with a unique marker as its first argument (inherited by every process it forks)."""
    marker = f"hrm-sandbox-test-{uuid.uuid4().hex}"
    outcome = run_sandboxed([sys.executable, "-c", textwrap.dedent(code), marker], files or {}, limits, mode=mode)
    return outcome, marker


def require(mode: str, protection: str) -> None:
    if protection not in sandbox.protections(mode):
        pytest.skip(f"{mode} mode here does not guarantee {protection!r} (protections: {sandbox.protections(mode)})")


def assert_ended_cleanly(outcome: Outcome, marker: str, limits: Limits = FAST) -> None:
    assert outcome.wall_seconds < limits.wall_seconds + MARGIN, outcome
    assert processes_with(marker) == [], f"processes of the run left behind: {outcome}"


# --- ordinary programs ------------------------------------------------------------------------------------------

def test_a_program_runs_in_its_scratch_directory_with_its_files_and_an_empty_environment(mode: str) -> None:
    outcome, marker = run_python("""
        import json, os
        print(json.dumps({"cwd": os.getcwd(), "data": open("in/data.txt").read(), "env": dict(os.environ)}))
        open("out.txt", "w").write("written")
        print(open("out.txt").read())
    """, mode, files={"in/data.txt": b"hello"})
    assert outcome.status == "ok" and outcome.returncode == 0 and outcome.signal is None, outcome
    seen = json.loads(outcome.stdout.splitlines()[0])
    assert seen["data"] == "hello"
    hook = {"PYTHONPATH"} if sandbox.PYTHON_AUDIT_HOOK in sandbox.protections(mode) else set()
    assert set(seen["env"]) == {"PATH", "HOME", "TMPDIR", "LANG"} | hook
    assert seen["env"]["HOME"] == seen["cwd"]
    assert outcome.stdout.splitlines()[1] == b"written"
    assert not Path(seen["cwd"]).parent.exists(), "the scratch directory (and the hook beside it) is removed"
    assert_ended_cleanly(outcome, marker)


def test_a_program_exiting_non_zero_is_an_error_with_its_stderr(mode: str) -> None:
    outcome, marker = run_python("import sys; sys.stderr.write('bad input'); sys.exit(3)", mode)
    assert (outcome.status, outcome.returncode, outcome.stderr) == ("error", 3, b"bad input")
    assert outcome.cpu_seconds > 0


def test_writing_a_file_beyond_the_file_size_limit_fails(mode: str) -> None:
    outcome, marker = run_python("open('big', 'wb').write(b'x' * (2 << 20))", mode)
    assert outcome.status == "error" and b"File too large" in outcome.stderr, outcome


def test_opening_more_files_than_the_limit_fails(mode: str) -> None:
    outcome, marker = run_python("fs = [open(f'f{i}', 'w') for i in range(100)]", mode)
    assert outcome.status == "error" and b"Too many open files" in outcome.stderr, outcome


def test_files_must_be_relative_paths_inside_the_scratch_directory() -> None:
    with pytest.raises(ValueError, match="relative path"):
        run_sandboxed([sys.executable, "-c", "pass"], {"../escape.txt": b"x"}, FAST)


def test_a_program_not_on_path_is_refused() -> None:
    with pytest.raises(FileNotFoundError, match="no-such-program"):
        run_sandboxed(["no-such-program-hrm"], {}, FAST)


def test_protections_always_include_the_resource_limits() -> None:
    for mode in ["basic"] + (["namespaces"] if sandbox.namespaces_available() else []):
        assert sandbox.RLIMITS in sandbox.protections(mode)
    if sandbox.namespaces_available():
        assert sandbox.protections() == sandbox.protections("namespaces")


# --- hostile programs -------------------------------------------------------------------------------------------

def test_a_fork_bomb_is_held_to_the_process_limit_and_killed(mode: str) -> None:
    require(mode, sandbox.PROCESS_LIMIT)  # never run a fork bomb where nothing holds it
    # Every process forks for ever; a refused fork is retried after a millisecond, so that no process dies of its
    # CPU limit (which would free a slot and blur the count) and the machine is not flooded.
    outcome, marker = run_python("""
        import os, time
        while True:
            try:
                if os.fork() == 0:
                    os.write(1, b"+")
            except OSError:
                time.sleep(0.001)
    """, mode)
    assert outcome.status == "timeout", outcome
    # Each "+" is one child: with the program itself, at most `processes` (exact in a namespace, where the count
    # is the run's alone; in basic mode the uid's other processes may come and go meanwhile).
    forked = outcome.stdout.count(b"+")
    assert 0 < forked <= (FAST.processes - 1 if mode == "namespaces" else FAST.processes + 2), outcome.stdout
    assert_ended_cleanly(outcome, marker)


def test_an_infinite_loop_is_stopped_at_the_cpu_limit(mode: str) -> None:
    limits = dataclasses.replace(FAST, wall_seconds=15)  # on a busy machine 1 s of CPU may take longer than 2 s
    outcome, marker = run_python("while True: pass", mode, limits)
    assert outcome.status == "timeout" and outcome.signal == signal.SIGXCPU, outcome
    # wait4's user+system time is sampled at ticks and under-counts against the scheduler's own clock, which the
    # limit uses: under load it reads well below the limit.
    assert limits.cpu_seconds * 0.5 <= outcome.cpu_seconds < limits.cpu_seconds + 1.5
    assert_ended_cleanly(outcome, marker, limits)


def test_a_loop_ignoring_the_cpu_warning_is_killed_at_the_hard_cpu_limit_and_still_a_timeout() -> None:
    # One mode suffices: the rlimits and the classification are the same in both (and it costs 2 s of CPU).
    limits = dataclasses.replace(FAST, wall_seconds=15)
    outcome, marker = run_python("""
        import signal
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        while True:
            pass
    """, "basic", limits)
    assert (outcome.status, outcome.signal) == ("timeout", signal.SIGKILL), outcome
    assert_ended_cleanly(outcome, marker, limits)


def test_sleeping_forever_is_stopped_at_the_wall_limit_and_the_cpu_it_used_is_reported(mode: str) -> None:
    outcome, marker = run_python("""
        import time
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            pass
        print('started', flush=True)
        time.sleep(3600)
    """, mode)
    assert outcome.status == "timeout" and outcome.stdout == b"started\n", outcome
    assert outcome.signal == signal.SIGKILL and outcome.cpu_seconds >= 0.2, outcome
    assert WALL <= outcome.wall_seconds < WALL + MARGIN
    assert_ended_cleanly(outcome, marker)


def test_a_memory_hog_hits_the_address_space_limit(mode: str) -> None:
    outcome, marker = run_python("""
        hog = []
        while True:
            hog.append(bytearray(8 << 20))
    """, mode)
    assert outcome.status == "memory_limit" and b"MemoryError" in outcome.stderr, outcome
    assert_ended_cleanly(outcome, marker)


def test_unbounded_output_is_cut_at_the_output_limit(mode: str) -> None:
    outcome, marker = run_python("""
        import sys
        while True:
            sys.stdout.write("x" * 4096)
    """, mode)
    assert outcome.status == "output_limit", outcome
    assert outcome.stdout == b"x" * FAST.output_bytes
    assert_ended_cleanly(outcome, marker)


def test_unbounded_error_output_is_cut_at_the_output_limit_too(mode: str) -> None:
    outcome, marker = run_python("""
        import os
        while True:
            os.write(2, b"e" * 4096)
    """, mode)
    assert outcome.status == "output_limit" and len(outcome.stderr) == FAST.output_bytes, outcome
    assert_ended_cleanly(outcome, marker)


def test_closing_stdout_and_stderr_does_not_hang_the_reader(mode: str) -> None:
    limits = dataclasses.replace(FAST, wall_seconds=1)
    outcome, marker = run_python("""
        import os, time
        print("before", flush=True)
        os.close(1)
        os.close(2)
        time.sleep(3600)
    """, mode, limits)
    assert outcome.status == "timeout" and outcome.stdout == b"before\n", outcome
    assert_ended_cleanly(outcome, marker, limits)


def test_stdin_is_at_end_of_file_so_reading_it_forever_only_spins_until_the_cpu_limit(mode: str) -> None:
    outcome, marker = run_python("""
        import sys
        print(len(sys.stdin.buffer.read()), flush=True)
        while True:
            sys.stdin.buffer.read()
    """, mode)
    assert outcome.status == "timeout" and outcome.stdout == b"0\n", outcome
    assert_ended_cleanly(outcome, marker)


def test_writing_outside_the_scratch_directory_fails(mode: str, tmp_path: Path) -> None:
    prot = sandbox.protections(mode)
    if not {sandbox.WRITES_CONFINED, sandbox.WRITES_UNPRIVILEGED, sandbox.PYTHON_AUDIT_HOOK} & set(prot):
        require(mode, sandbox.WRITES_CONFINED)
    outside = tmp_path / "escaped.txt"
    beside = Path(__file__).with_name(f"escaped-{uuid.uuid4().hex}.txt")  # in the repository
    outcome, marker = run_python(f"""
        blocked = []
        for path in [{str(outside)!r}, {str(beside)!r}]:
            try:
                open(path, "w").write("escaped")
            except OSError as e:
                blocked.append(type(e).__name__)
        open("inside.txt", "w").write("fine")
        print(len(blocked), open("inside.txt").read())
    """, mode)
    assert (outcome.status, outcome.stdout) == ("ok", b"2 fine\n"), outcome
    assert not outside.exists() and not beside.exists()
    assert_ended_cleanly(outcome, marker)


def test_opening_a_network_connection_fails(mode: str) -> None:
    if sandbox.PYTHON_AUDIT_HOOK not in sandbox.protections(mode):
        require(mode, sandbox.NO_NETWORK)
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        outcome, marker = run_python(f"""
            import socket
            socket.create_connection(("127.0.0.1", {port}), timeout=1)
        """, mode)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
    # Refused by the kernel (no route: the namespace's loopback is down) or by the audit hook.
    assert outcome.status == "error", outcome
    assert b"Network is unreachable" in outcome.stderr or b"PermissionError: sandbox: socket" in outcome.stderr
    assert_ended_cleanly(outcome, marker)


def test_killing_its_parent_does_not_free_it(mode: str) -> None:
    outcome, marker = run_python("""
        import os, signal, time
        try:
            os.kill(os.getppid(), signal.SIGKILL)
        except PermissionError:
            pass
        time.sleep(0.5)
        print("still here")
    """, mode)
    prot = sandbox.protections(mode)
    if {sandbox.HOST_PROCESSES_HIDDEN, sandbox.PYTHON_AUDIT_HOOK} & set(prot):
        # Its parent is the namespace's init, which ignores signals from inside, or the audit hook refuses to
        # signal outside the program's group: the program simply carries on.
        assert (outcome.status, outcome.stdout) == ("ok", b"still here\n"), outcome
    else:
        # Basic mode, same uid: the launcher dies, the run is reported killed and its process group is killed.
        assert outcome.status in ("ok", "killed"), outcome
    assert_ended_cleanly(outcome, marker)


def test_signalling_every_process_it_can_reaches_nothing_outside(mode: str) -> None:
    require(mode, sandbox.HOST_PROCESSES_HIDDEN)  # kill(-1) outside a PID namespace could hit this test runner
    outcome, marker = run_python("""
        import os, signal
        try:
            os.kill(-1, signal.SIGKILL)  # every process it may signal, itself and its init excepted
        except ProcessLookupError:
            pass  # there is none: the namespace holds only the program and its init
        print("done")
    """, mode)
    assert (outcome.status, outcome.stdout) == ("ok", b"done\n"), outcome
    assert_ended_cleanly(outcome, marker)


def test_a_daemon_that_leaves_the_session_is_killed_when_the_program_ends(mode: str) -> None:
    outcome, marker = run_python("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                time.sleep(3600)
            os._exit(0)
        os.wait()
        time.sleep(0.2)  # let the daemon settle
        print("parent done")
    """, mode)
    assert (outcome.status, outcome.stdout) == ("ok", b"parent done\n"), outcome
    assert outcome.wall_seconds < WALL, "the run ends with its program, not when the daemon is found"
    assert_ended_cleanly(outcome, marker)


def test_in_basic_mode_the_audit_hook_refuses_starting_programs_and_loading_c_libraries() -> None:
    if sandbox.PYTHON_AUDIT_HOOK not in sandbox.protections("basic"):
        pytest.skip("basic mode here has no audit hook for this interpreter")
    outcome, marker = run_python("""
        import os
        refused = []
        for attempt in (lambda: os.system("true"), lambda: os.execv("/bin/true", ["true"]),
                        lambda: __import__("ctypes")):
            try:
                attempt()
            except PermissionError:
                refused.append(1)
        print(len(refused))
    """, "basic")
    assert (outcome.status, outcome.stdout) == ("ok", b"3\n"), outcome
    assert_ended_cleanly(outcome, marker)


def test_runs_in_parallel_threads_each_get_their_own_outcome(mode: str) -> None:
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda i: run_python(f"print({i})", mode)[0], range(4)))
    assert [(o.status, o.stdout) for o in outcomes] == [("ok", f"{i}\n".encode()) for i in range(4)]


def test_devices_stay_usable_for_writing_to_dev_null_and_reading_randomness(mode: str) -> None:
    outcome, marker = run_python("""
        import os
        open(os.devnull, "w").write("discarded")
        print(len(os.urandom(4)), len(open("/dev/urandom", "rb").read(4)))
    """, mode)
    assert (outcome.status, outcome.stdout) == ("ok", b"4 4\n"), outcome


def test_connecting_to_another_programs_unix_socket_in_tmp_fails(mode: str) -> None:
    if sandbox.PYTHON_AUDIT_HOOK not in sandbox.protections(mode):
        require(mode, sandbox.NO_NETWORK)
    where = Path(tempfile.mkdtemp(dir="/tmp"))  # where services keep their sockets (Ray's, for one)
    try:
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(where / "service.sock"))
            server.listen()
            server.setblocking(False)
            outcome, marker = run_python(f"""
                import socket
                socket.socket(socket.AF_UNIX).connect({str(where / "service.sock")!r})
            """, mode)
            with pytest.raises(BlockingIOError):
                server.accept()  # nobody connected
    finally:
        shutil.rmtree(where)
    # Not there (namespace mode hides /tmp) or refused by the audit hook.
    assert outcome.status == "error", outcome
    assert b"FileNotFoundError" in outcome.stderr or b"PermissionError: sandbox: socket" in outcome.stderr
    assert_ended_cleanly(outcome, marker)


def test_a_program_ended_by_a_signal_of_its_own_is_killed(mode: str) -> None:
    outcome, marker = run_python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", mode)
    assert (outcome.status, outcome.returncode, outcome.signal) == ("killed", None, signal.SIGSEGV), outcome


def test_a_program_that_cannot_be_executed_is_an_error_saying_why(mode: str) -> None:
    where = Path(tempfile.mkdtemp())
    try:
        where.chmod(0o755)  # for nobody (as whom root runs programs) to reach it
        script = where / "bad-interpreter"
        script.write_text("#!/nonexistent/interpreter\n")
        script.chmod(0o755)
        outcome = run_sandboxed([str(script)], {}, FAST, mode=mode)
    finally:
        shutil.rmtree(where)
    assert (outcome.status, outcome.returncode) == ("error", 127), outcome
    assert b"cannot start" in outcome.stderr and b"No such file or directory" in outcome.stderr


def test_a_program_argument_longer_than_the_kernels_limit_for_one_argument_of_the_launcher_passes(mode: str) -> None:
    long_text = "y" * 100_000  # with the rest of the configuration, past the 128 KiB one argument may hold
    outcome = run_sandboxed([sys.executable, "-c", "import sys; print(len(sys.argv[1]) + len(sys.argv[2]))",
                             long_text, long_text], {}, FAST, mode=mode)
    assert (outcome.status, outcome.stdout) == ("ok", b"200000\n"), outcome


def test_without_namespaces_auto_falls_back_to_basic_and_namespace_mode_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_namespaces_work", lambda: False)
    assert sandbox.protections() == sandbox.protections("basic")
    assert sandbox.NO_NETWORK not in sandbox.protections() and sandbox.WRITES_CONFINED not in sandbox.protections()
    with pytest.raises(sandbox.SandboxError, match="namespace mode requested"):
        run_sandboxed([sys.executable, "-c", "pass"], {}, FAST, mode="namespaces")
    assert run_sandboxed([sys.executable, "-c", "print('basic')"], {}, FAST).stdout == b"basic\n"
