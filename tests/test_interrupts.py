"""Every entry point ends the same way: Ctrl-C is one line and exit 130 with nothing partial
under a final name, and every module run as a script takes --help and refuses unknown options."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `transfer` is a folder of scripts

SLOW_WRITE = """
import sys, time
from simsiam_hub import cli
from simsiam_hub.fileio import atomic_path

def slow(args):  # a command caught in the middle of writing its output
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_text("half")
        print("writing", flush=True)
        time.sleep(60)
    return 0

cli._run_configs = slow  # `simsiam-hub configs` now runs `slow`
sys.exit(cli.main(["configs"]))
"""


def test_ctrl_c_is_one_line_exit_130_and_leaves_nothing_partial(tmp_path):
    target = tmp_path / "out" / "result.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITE, str(target)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == ("simsiam-hub configs: interrupted (Ctrl-C); no partial file is left under a final name"), err
    assert list(tmp_path.iterdir()) == []  # neither the file, nor its temporary, nor the folder made for it


def test_a_reader_of_stdout_that_went_away_is_a_quiet_exit_141():
    """`simsiam-hub configs | head -3`: once head has gone, the command ends as Unix tools do
    (exit 141, 128 + SIGPIPE), without a traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "simsiam_hub.cli", "configs"],
            cwd=ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == "", (proc.returncode, proc.stderr)


def test_every_entry_point_shares_the_wrapper(monkeypatch, capsys):
    """simsiam-hub, transfer/train_net.py and transfer/summarize.py: KeyboardInterrupt -> 130, one line."""
    from simsiam_hub import cli
    from transfer import summarize

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_configs", interrupted)
    monkeypatch.setattr(summarize, "aggregate", interrupted)
    monkeypatch.setattr(summarize, "find_results", lambda paths: [])
    assert cli.main(["configs"]) == 130
    assert capsys.readouterr().err.startswith("simsiam-hub configs: interrupted (Ctrl-C)")
    assert summarize.main(["nowhere"]) == 130
    assert capsys.readouterr().err.startswith("summarize.py: interrupted (Ctrl-C)")
    try:
        from transfer import train_net
    except ImportError:
        pytest.skip("detectron2 is not importable")
    monkeypatch.setattr(train_net, "launch", interrupted)
    assert train_net.cli(["--config-file", "voc07_R_50_C4_smoke"]) == 130
    assert capsys.readouterr().err.strip() == (
        "train_net.py: interrupted (Ctrl-C); no partial file is left under a final name"
    )


RUN_AS_SCRIPT = """
import contextlib, io, json, runpy, sys, warnings
warnings.simplefilter("ignore")
out = {}
for path, flag in json.loads(sys.argv[1]):
    sys.argv = [path, flag]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            if path.startswith("module:"):  # a package module: its relative imports need `python -m`
                runpy.run_module(path[len("module:"):], run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(path, run_name="__main__")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except ImportError as err:  # detectron2 absent: nothing to check
            code = "skip: " + str(err)
    text = buf.getvalue()
    out[path + " " + flag] = [code, text[:300] + text[-300:]]
print(json.dumps(out))
"""


@pytest.mark.slow  # about 30 s on 2 busy cores: every script's imports (torch, detectron2), twice
def test_every_script_takes_help_and_refuses_unknown_options(tmp_path):
    """`python -m simsiam_hub.synthetic_detection --help` wrote a dataset into a folder named
    --help: every file with a ``__main__`` block (found by scanning the repository) parses its
    arguments with argparse first."""
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    scripts = [
        f"module:{f.removesuffix('.py').replace('/', '.')}" if f.startswith("simsiam_hub/") else str(ROOT / f)
        for f in tracked.stdout.split()
        if re.search(r'^if __name__ == "__main__":', (ROOT / f).read_text(), re.MULTILINE)
    ]
    assert "module:simsiam_hub.detection.synthetic" in scripts and len(scripts) >= 8, scripts
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    import json

    # One process per flag, each running every script once (a script's module code may register
    # names that a second run in the same process would register again).
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN_AS_SCRIPT, json.dumps([(s, flag) for s in scripts])],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ("--help", "--no-such-option")
    ]
    results = {}
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.update(json.loads(out.strip().splitlines()[-1]))
    assert len(results) == 2 * len(scripts)
    for key, (code, text) in results.items():
        if isinstance(code, str):
            assert "detectron2" in code, (key, code)
            continue
        if key.endswith("--help"):
            assert code == 0 and "usage:" in text[:300], (key, code, text)
        else:
            assert code == 2 and "error: " in text, (key, code, text)  # argparse: unrecognized, or a missing argument
    assert list(tmp_path.iterdir()) == []  # nothing written (no folder named --help)


def test_synthetic_detection_takes_help_under_its_old_path_too(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for module in ("simsiam_hub.detection.synthetic", "simsiam_hub.synthetic_detection"):
        for flag, code in (("--help", 0), ("--bogus", 2)):
            proc = subprocess.run(
                [sys.executable, "-m", module, flag], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert proc.returncode == code and "usage: " in proc.stdout + proc.stderr, (module, flag, proc.stderr)
    assert list(tmp_path.iterdir()) == []
