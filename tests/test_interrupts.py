"""Every entry point ends the same way: Ctrl-C is one line and exit 130 with nothing partial
under a final name, and every module run as a script takes --help and refuses unknown options."""

from __future__ import annotations

import os
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
    assert list(target.parent.iterdir()) == []  # neither the file nor its temporary


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
