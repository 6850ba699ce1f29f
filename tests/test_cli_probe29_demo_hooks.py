"""`hubi demo` set SIGINT's handler and sys.unraisablehook for its run and left both set when
it returned: a caller that runs the command in-process (``standalone_mode=False``, a test, a
notebook) then had Ctrl-C caught by a stale demo object (only the first one raised, later
ones were silently dropped) and its unraisable hook replaced. Both are now put back in a
``finally``, also on the command's sys.exit paths.

Real parts: the real click command in a fresh Python process (signal handlers are
process-wide), failing early on a --workdir that cannot be made (a file stands in its way).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.xdist_group("test_cli_probe29_demo_hooks")

SCRIPT = textwrap.dedent(
    """
    import json, signal, sys
    from hubi.commands.demo import demo

    def run(args):
        try:
            demo.main(args, standalone_mode=False)
        except SystemExit as exc:
            return exc.code
        return None

    out = {}
    blocker = sys.argv[1]
    # 1: the interpreter's own handler and hook
    out["code"] = run(["--workdir", blocker + "/demo", "--json"])
    out["int_default"] = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    out["hook_default"] = sys.unraisablehook is sys.__unraisablehook__

    # 2: a caller's own handler and hook are the ones put back
    def mine(signum, frame):
        pass

    def my_hook(info):
        pass

    signal.signal(signal.SIGINT, mine)
    sys.unraisablehook = my_hook
    out["code2"] = run(["--workdir", blocker + "/demo"])
    out["int_mine"] = signal.getsignal(signal.SIGINT) is mine
    out["hook_mine"] = sys.unraisablehook is my_hook
    print("RESULT " + json.dumps(out))
    """
)


def test_demo_puts_back_sigint_handler_and_unraisable_hook(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(blocker)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    said = res.stdout + res.stderr
    assert res.returncode == 0, said
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])
    # the demo ran and failed on its workdir (its own exit path, not an error in the script)
    assert out["code"] == 1 and out["code2"] == 1, (out, said)
    # --json: one document, the failure naming its step; then the story's line on stderr
    failed = json.loads(res.stdout[: res.stdout.index("RESULT ")])
    assert failed["ok"] is False and failed["error"], said
    assert "demo failed" in res.stderr, said
    assert out["int_default"] and out["hook_default"], out
    assert out["int_mine"] and out["hook_mine"], out
