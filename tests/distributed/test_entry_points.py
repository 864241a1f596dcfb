"""The DistDGL entry points refuse to run outside `dgl-rbgt launch`, in one line, and the server's
stays light (no models, no training loop)."""
import json
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module, role", [("dgl_rbgt.distributed.server", None),
                                          ("dgl_rbgt.distributed.trainer", "server")])
def test_wrong_role_is_one_line_and_exit_2(tmp_path, module, role):
    spec = tmp_path / "launch.json"
    spec.write_text(json.dumps({}))
    env = {k: v for k, v in os.environ.items() if k != "DGL_ROLE"}
    if role:
        env["DGL_ROLE"] = role
    done = subprocess.run([sys.executable, "-m", module, "--spec", str(spec), "--rank", "3"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "start me through `dgl-rbgt launch`" in errors[0], done.stderr
    assert f"{module.rsplit('.', 1)[1]} 3: error: this is the DistDGL" in errors[0]


@pytest.mark.parametrize("content", [None, "{not json"])
def test_missing_or_broken_spec_is_one_line_and_exit_2(tmp_path, content):
    spec = tmp_path / "launch.json"
    if content is not None:
        spec.write_text(content)
    done = subprocess.run([sys.executable, "-m", "dgl_rbgt.distributed.server", "--spec", str(spec), "--rank", "0"],
                          env={**os.environ, "DGL_ROLE": "server"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"--spec {spec}: cannot read the launch spec" in errors[0], done.stderr


def test_the_server_imports_neither_models_nor_the_training_loop():
    code = ("import sys, dgl_rbgt.distributed.server, dgl_rbgt.config; "
            "print(sorted(m for m in sys.modules if m.startswith(('dgl_rbgt.models', 'dgl_rbgt.train', "
            "'dgl_rbgt.batching', 'sklearn'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
