"""Pretraining engine: DDP equivalence, kill-and-resume, NaN handling, config errors.

A tiny network (ResNet-18, small stem, 16 px, synthetic images) keeps each run to seconds.
"""

import csv
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from simsiam_hub import engine
from simsiam_hub.checkpoint import list_checkpoints, load_checkpoint
from simsiam_hub.config import ConfigError, PretrainConfig, load_config
from simsiam_hub.engine import NonFiniteLossError, pretrain

ROOT = Path(__file__).resolve().parents[1]


def tiny(out, *extra):
    return [
        "data.dataset=synthetic",
        "data.synthetic_size=64",
        "data.image_size=16",
        "data.num_workers=0",
        "model.arch=resnet18",
        "model.small_stem=true",
        "model.dim=64",
        "model.pred_dim=16",
        "optim.batch_size=16",
        "optim.epochs=2",
        "monitor.knn_every_epochs=0",
        f"run.output_dir={out}",
        "run.progress=false",
        "run.tensorboard=false",
        "run.deterministic=true",
        "run.amp=off",
        *extra,
    ]


def cli(*args, nproc=None, env=None, launcher=None, **kwargs):
    """``simsiam-hub ARGS`` in a subprocess (under torchrun with ``nproc``); ``launcher``: a script
    to run instead of ``-m simsiam_hub.cli`` (tests/ddp_launcher.py)."""
    program = [str(launcher)] if launcher else ["-m", "simsiam_hub.cli"]
    prefix = [sys.executable]
    if nproc:
        prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [*prefix, *program, *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def run_cli(*args, **kwargs):
    proc = cli(*args, **kwargs)
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def final_model(out):
    return load_checkpoint(list_checkpoints(out)[0])["model"]


def ddp_gap(tmp_path, plant: str | None = None, data: tuple = ()) -> tuple[float, int]:
    """The largest |one-process - two-process| weight difference after 4 steps, relative to what
    training moved that tensor (at least 1e-6: a BatchNorm running mean of about 1e-16 moves by
    rounding alone), over all tensors (fp64 end to end); and how many tensors moved. ``data``:
    overrides that train on another source than the generated shapes."""
    launcher = ROOT / "tests" / "ddp_launcher.py"
    # 8 px (4x less compute than tiny's 16 px): the equivalence does not depend on the image size
    args = ("run.max_steps=4", "run.channels_last=false", "data.image_size=8", *data)
    one, two = tmp_path / "one", tmp_path / f"two_{plant}"
    if not list_checkpoints(one):
        code, log = run_cli("pretrain", *tiny(one, *args), launcher=launcher)
        assert code == 0, log[-3000:]
    code, log = run_cli(
        "pretrain", *tiny(two, *args), nproc=2, launcher=launcher, env={"SIMSIAM_TEST_PLANT": plant or ""}
    )
    assert code == 0, log[-3000:]
    assert load_checkpoint(list_checkpoints(two)[0])["world_size"] == 2
    a, b = final_model(one), final_model(two)
    assert a.keys() == b.keys()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)  # the runs' seed: their common initialisation
        init = engine.SimSiam("resnet18", 64, 16, small_stem=True).state_dict()
    finally:
        torch.set_default_dtype(default)
    gap, moved = 0.0, 0
    for key in a:
        assert a[key].dtype == b[key].dtype
        if not a[key].is_floating_point():
            assert torch.equal(a[key], b[key]) or plant, key
            continue
        assert a[key].dtype == torch.float64, key
        update = (a[key] - init[key]).norm().item()
        moved += update > 0
        gap = max(gap, (a[key] - b[key]).norm().item() / max(update, 1e-6))
    return gap, moved


def test_ddp_two_processes_match_one_process(tmp_path_factory):
    """2 ranks x 8 images with synchronised BatchNorm == 1 rank x 16 images: the same weights
    after 4 steps, run in float64 end to end (tests/ddp_launcher.py).

    Why float64: in float32 the two runs differ by rounding alone, and by how much depends on
    the CPU: oneDNN picks other convolution kernels for batch 8 and batch 16, and 4 SGD steps
    amplify their different rounding. On 2 cores of an AMD EPYC (AVX2, no AVX-512) the float32
    runs differed by 2e-4 in conv1's weight, ten times what a bound tuned on an Intel AVX-512
    machine allowed. In float64 the same runs agree to within 5e-13 of what training moved each
    tensor (median 2e-15, measured on that AMD machine): the difference was rounding, not DDP.
    The bound below (1e-8) leaves a margin of 10^4 for other CPUs, while each bug DDP
    equivalence exists to catch moves some tensor by more than 1e-4 of its update
    (test_ddp_check_catches_planted_bugs)."""
    gap, moved = ddp_gap(tmp_path_factory.getbasetemp() / "ddp_runs")
    assert moved > 50  # the runs did train
    assert gap < 1e-8, gap


@pytest.mark.parametrize("plant", ["summed_gradients", "unsynced_batchnorm", "same_images"])
def test_ddp_check_catches_planted_bugs(tmp_path_factory, plant):
    """The equivalence check above fails for each bug it is there to catch."""
    gap, moved = ddp_gap(tmp_path_factory.getbasetemp() / "ddp_runs", plant)
    assert moved > 50
    assert gap > 1e-4, (plant, gap)


def test_knn_every_steps_also_runs_on_epoch_ends(tmp_path):
    # 4 steps an epoch, a check every 2 steps and none per epoch: steps 2, 4 (an epoch end), 6, 8.
    cfg = load_config(
        PretrainConfig,
        None,
        tiny(
            tmp_path,
            "monitor.knn_every_steps=2",
            "monitor.knn_bank_size=32",
            "monitor.knn_query_size=16",
            "monitor.knn_k=20",
        ),
    )
    pretrain(cfg, resume=None)
    with open(tmp_path / "epoch_log.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["knn_top1"]]
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]


def test_the_engine_sets_the_lr_once_per_epoch(tmp_path):
    """optim.lr_schedule=epoch in a real run (per step, the default, is what every other test here
    runs; both schedules' values are checked in test_optim.py)."""
    # 2 epochs of 4 steps of batch 4, every step logged; init lr 0.05 * 4 / 256.
    small = (
        "data.synthetic_size=16",
        "optim.batch_size=4",
        "data.image_size=8",
        "optim.lr_schedule=epoch",
        "run.log_every_steps=1",
    )
    pretrain(load_config(PretrainConfig, None, tiny(tmp_path, *small)), resume=None)
    with open(tmp_path / "train_log.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    init = 0.05 * 4 / 256  # main_simsiam.py's adjust_learning_rate at each epoch start: cos(pi * e / 2)
    assert lrs == pytest.approx([init] * 4 + [init * 0.5 * (1 + math.cos(math.pi / 2))] * 4, rel=1e-5)


def test_global_batch_must_divide_over_ranks(tmp_path):
    code, log = run_cli("pretrain", *tiny(tmp_path, "optim.batch_size=15"), nproc=2)
    assert code != 0
    assert "optim.batch_size=15 does not divide over 2 processes" in log


def sigkill_then_resume(tmp_path, data: tuple = ()) -> None:
    """A run killed (SIGKILL) after its first checkpoint, then resumed, ends with the weights of an
    uninterrupted run; ``data``: overrides that train on another source than the generated shapes."""
    args = ("run.checkpoint_every_steps=2", "optim.epochs=3", "data.image_size=8", *data)  # 12 steps of 64 images
    code, log = run_cli("pretrain", *tiny(tmp_path / "straight", *args))
    assert code == 0, log

    out = tmp_path / "killed"
    proc = cli("pretrain", *tiny(out, *args))
    deadline = time.time() + 300
    while not list_checkpoints(out) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    saved = [load_checkpoint(p)["step"] for p in list_checkpoints(out)]
    assert saved and max(saved) < 12, saved  # killed part-way

    # A half-written file from the kill must be passed over, not trusted.
    newest = list_checkpoints(out)[0]
    fake_newer = out / "checkpoint_step00000011.pt"
    fake_newer.write_bytes(newest.read_bytes()[:1000])

    code, log = run_cli("pretrain", *tiny(out, *args), "--resume", "auto")
    assert code == 0, log
    assert "skipping" in log and "checkpoint_step00000011.pt" in log
    resumed = load_checkpoint(list_checkpoints(out)[0])
    assert resumed["step"] == 12
    straight = final_model(tmp_path / "straight")
    for key, value in straight.items():
        assert torch.equal(resumed["model"][key], value), key
    # the CSV log holds each step once, whatever the interruption
    steps = [line.split(",")[0] for line in (out / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps), key=int)


def test_sigkill_then_resume_gives_the_same_weights(tmp_path):
    sigkill_then_resume(tmp_path)


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_that_resumes(tmp_path):
    """SIGINT to the whole process group, as Ctrl-C sends it (the data-loader worker included):
    the run finishes its step, writes a checkpoint there, says so and exits 130."""
    out = tmp_path / "stopped"
    args = ("optim.epochs=25", "data.num_workers=1", "run.log_every_steps=1")  # 100 steps
    proc = cli("pretrain", *tiny(out, *args), start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        log_file = out / "train_log.csv"
        if log_file.exists() and len(log_file.read_text().splitlines()) > 1:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, text[-3000:]
    assert "Traceback" not in text and "SIGINT: stopping after this step" in text
    found = re.search(
        r"stopped by SIGINT at step (\d+) of 100 \(epoch [\d.]+\); checkpoint (\S+): the same command resumes", text
    )
    assert found, text[-2000:]
    step = int(found[1])
    assert 1 <= step < 100
    assert found[2] == str(engine.checkpoint_path(out, step)) and load_checkpoint(found[2])["step"] == step
    epochs = [row["epoch"] for row in csv.DictReader((out / "epoch_log.csv").open())]
    assert all(float(e) == int(float(e)) for e in epochs), epochs  # no row for the part of an epoch

    code, log = run_cli("pretrain", *tiny(out, *args, f"run.max_steps={step + 2}"))  # resumes, 2 more steps
    assert code == 0, log[-3000:]
    assert f"resumed from {found[2]} at step {step}" in log
    assert load_checkpoint(list_checkpoints(out)[0])["step"] == step + 2


def test_a_second_trainer_in_a_running_folder_is_refused(tmp_path):
    out = tmp_path / "busy"
    first = cli("pretrain", *tiny(out, "optim.epochs=100"))
    try:
        deadline = time.time() + 300
        while not (out / "train_log.csv").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[0][-2000:]
        code, log = run_cli("pretrain", *tiny(out, "optim.epochs=100"))
        assert first.poll() is None  # still training: the refusal was the lock's, not a finished run's
    finally:
        first.kill()
        first.communicate()
    assert code != 0
    assert f"{out} is in use by another process (pid {first.pid} on " in log, log[-2000:]
    assert "Traceback" not in log


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_loss = engine.simsiam_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(engine, "simsiam_loss", poisoned)
    cfg = load_config(PretrainConfig, None, tiny(tmp_path, "run.checkpoint_every_steps=2"))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3 .*checkpoint_step00000002\.pt"):
        pretrain(cfg)
    kept = list_checkpoints(tmp_path)
    assert [p.name for p in kept] == ["checkpoint_step00000002.pt"]
    assert load_checkpoint(kept[0])["step"] == 2


def test_resume_refuses_a_different_model(tmp_path):
    pretrain(load_config(PretrainConfig, None, tiny(tmp_path, "run.max_steps=1")))
    with pytest.raises(engine.CheckpointError, match="holds a different model"):
        pretrain(load_config(PretrainConfig, None, tiny(tmp_path, "model.dim=32")))


def test_a_two_layer_projector_trains_exports_and_loads_whole(tmp_path):
    from simsiam_hub.hub.export import export
    from simsiam_hub.hub.loading import from_pretrained

    result = pretrain(
        load_config(PretrainConfig, None, tiny(tmp_path / "run", "model.proj_layers=2", "run.max_steps=1"))
    )
    state = load_checkpoint(result.checkpoint)["model"]
    assert "encoder.fc.3.weight" in state and "encoder.fc.6.weight" not in state
    folder = export(result.checkpoint, tmp_path / "model")
    for source in (result.checkpoint, folder):  # a training checkpoint and an exported folder
        whole = from_pretrained(source, head="simsiam")
        assert whole.encoder.fc[3].out_features == 64 and len(whole.encoder.fc) == 5
        for key, value in state.items():
            assert torch.equal(whole.state_dict()[key], value), key
    with pytest.raises(engine.CheckpointError, match="holds a different model"):
        pretrain(load_config(PretrainConfig, None, tiny(tmp_path / "run", "run.max_steps=2")))  # proj_layers 3


def test_foreign_checkpoint_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(
        engine.CheckpointError, match="not a simsiam-hub training checkpoint.*found keys \\['state_dict'\\]"
    ):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(
        engine.CheckpointError, match=r"junk.pt is not a readable checkpoint \(truncated or not a torch file\?\)"
    ):
        load_checkpoint(tmp_path / "junk.pt")


def test_pruning_deletes_only_this_runs_older_checkpoints(tmp_path):
    """A junk file named like a newer checkpoint and a checkpoint of another run sit in the
    folder: pruning (keep 1) leaves both, deletes this run's older ones, keeps its newest."""
    args = ("run.checkpoint_every_steps=2", "run.keep_checkpoints=1")
    pretrain(load_config(PretrainConfig, None, tiny(tmp_path / "other", "run.max_steps=2")))
    pretrain(load_config(PretrainConfig, None, tiny(tmp_path / "run", *args, "run.max_steps=4")))
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint_step00000004.pt"]
    junk = tmp_path / "run" / "checkpoint_step00000099.pt"
    junk.write_bytes(os.urandom(4096))
    foreign = tmp_path / "run" / "checkpoint_step00000003.pt"
    foreign.write_bytes(list_checkpoints(tmp_path / "other")[0].read_bytes())

    result = pretrain(
        load_config(PretrainConfig, None, tiny(tmp_path / "run", *args, "run.max_steps=8"))
    )  # resumes at 4
    assert result.step == 8 and result.checkpoint.is_file()
    names = [p.name for p in list_checkpoints(tmp_path / "run")]
    assert names == ["checkpoint_step00000099.pt", "checkpoint_step00000008.pt", "checkpoint_step00000003.pt"]
    assert load_checkpoint(result.checkpoint)["step"] == 8


def test_resume_refuses_changed_settings_unless_allowed(tmp_path):
    pretrain(load_config(PretrainConfig, None, tiny(tmp_path, "run.max_steps=1")))
    first = (tmp_path / "config.yaml").read_text()
    changed = tiny(tmp_path, "data.image_size=24", "optim.base_lr=0.1", "run.seed=1", "run.max_steps=2")
    message = r"trained with other settings: data.image_size 16 -> 24, optim.base_lr 0.05 -> 0.1, run.seed 0 -> 1 .*--allow-config-change"
    with pytest.raises(engine.CheckpointError, match=message):
        pretrain(load_config(PretrainConfig, None, changed))
    code, log = run_cli("pretrain", *changed)
    assert code == 1 and "Traceback" not in log and "--allow-config-change" in log.strip().splitlines()[-1]

    # What changes nothing computed (logging, workers, checkpoint cadence) resumes as it is.
    assert (
        pretrain(load_config(PretrainConfig, None, tiny(tmp_path, "run.max_steps=2", "run.log_every_steps=5"))).step
        == 2
    )
    assert (tmp_path / "config.yaml").read_text() == first
    allowed = pretrain(
        load_config(PretrainConfig, None, tiny(tmp_path, "optim.base_lr=0.1", "run.max_steps=3")),
        allow_config_change=True,
    )
    assert allowed.step == 3
    assert (tmp_path / "config.yaml").read_text() == first  # the run's first settings are never overwritten
    assert "base_lr: 0.1" in (tmp_path / "config_step00000002.yaml").read_text()
    assert load_checkpoint(allowed.checkpoint)["config"]["optim"]["base_lr"] == 0.1


def make_image_folder(root, broken: bool):
    """train/ and val/ with 2 classes of 16 small PNGs each; with ``broken``, one truncated JPEG in train/."""
    from PIL import Image

    for split in ("train", "val"):
        for k, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True)
            for i in range(16):
                Image.new("RGB", (20, 20), tuple(min(255, c + 3 * i) for c in colour)).save(folder / f"{i}.png")
    if broken:
        Image.new("RGB", (64, 64), (90, 90, 90)).save(root / "train" / "c0" / "broken.jpg", quality=95)
        data = (root / "train" / "c0" / "broken.jpg").read_bytes()
        (root / "train" / "c0" / "broken.jpg").write_bytes(data[: len(data) // 3])
    return root


def test_an_unreadable_image_is_skipped_by_name_and_the_run_stays_reproducible(tmp_path, caplog):
    data = make_image_folder(tmp_path / "data", broken=True)
    folder_args = ["data.dataset=imagefolder", f"data.root={data}", "run.max_steps=2"]  # 33 images: 2 steps of 16
    with caplog.at_level("WARNING"):
        first = pretrain(load_config(PretrainConfig, None, tiny(tmp_path / "a", *folder_args)))
    assert any("skipping unreadable image" in r.message and "broken.jpg" in r.message for r in caplog.records)
    ckpt = load_checkpoint(first.checkpoint)
    assert len(ckpt["bad_images"]) == 1
    assert open(tmp_path / "a" / "train_log.csv").read().splitlines()[-1].split(",")[-1] == "1"  # bad_images column

    again = pretrain(load_config(PretrainConfig, None, tiny(tmp_path / "b", *folder_args)))
    for key, value in load_checkpoint(again.checkpoint)["model"].items():
        assert torch.equal(value, ckpt["model"][key]), key  # the replacement image is drawn from the seed

    with pytest.raises(
        engine.DatasetError,
        match=r"1 images could not be read, more than data.max_bad_images=0 \(first: .*broken.jpg\)",
    ):
        pretrain(load_config(PretrainConfig, None, tiny(tmp_path / "c", *folder_args, "data.max_bad_images=0")))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE refuses writes this way on Linux")
def test_a_refused_checkpoint_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    """The file system refuses the checkpoint at step 4 (a file-size limit below a checkpoint's
    size, as a full disk would): the run stops in one line, the checkpoint of step 2 intact."""
    import resource

    out = tmp_path / "run"
    args = ("run.checkpoint_every_steps=2", "run.max_steps=4")
    pretrain(load_config(PretrainConfig, None, tiny(out, "run.checkpoint_every_steps=2", "run.max_steps=2")))
    previous = list_checkpoints(out)[0]
    limit = previous.stat().st_size // 2

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code, log = run_cli("pretrain", *tiny(out, *args), preexec_fn=limited)
    last = log.strip().splitlines()[-1]
    assert code == 1 and "Traceback" not in log, log[-2000:]
    assert last.startswith(
        "simsiam-hub pretrain: error: the file grew past the size this process may write (ulimit -f) while writing "
    )
    assert "checkpoint_step00000004.pt" in last and last.endswith("nothing was written")
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    assert list_checkpoints(out) == [previous] and load_checkpoint(previous)["step"] == 2


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.bogus=1", "unknown config key 'optim.bogus'"),
        ("optim.epochs=0", "optim.epochs=0 is invalid"),
        ("model.arch=vgg16", "model.arch='vgg16' is invalid: expected one of"),
        ("run.amp=fp8", "run.amp='fp8' is invalid"),
        (
            "monitor.collapse_warn_share=1.5",
            r"monitor.collapse_warn_share=1.5 is invalid: expected a number in \(0, 1\]",
        ),
        ("optim.base_lr=fast", "config key 'optim.base_lr'"),
        ("optim.epochs", "not of the form key=value"),
    ],
)
def test_bad_config_is_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainConfig, None, [override])


def readme_pretrain_configs() -> dict[str, dict[str, str]]:
    """The config table of docs/pretraining.md's "Configs and runs": config file -> {column: cell}."""
    section = (ROOT / "docs" / "pretraining.md").read_text().split("\n## Configs and runs\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip().strip("|").split("|")]
    assert header[:3] == ["config", "model", "data"], header
    rows = [dict(zip(header, (cell.strip() for cell in line.strip().strip("|").split("|")))) for line in lines[1:]]
    return {row["config"].strip("`"): row for row in rows}


def test_every_shipped_pretrain_config_is_what_the_docs_say():
    rows = readme_pretrain_configs()
    assert sorted(rows) == sorted(p.name for p in (ROOT / "configs" / "pretrain").glob("*.yaml"))
    archs = {"ResNet-18": "resnet18", "ResNet-50": "resnet50"}
    datasets = {
        "ImageNet": "imagefolder",
        "ImageNet-1k-Hub": "hf",  # ILSVRC/imagenet-1k through `datasets`
        "CIFAR-10": "cifar10",
        "Fashion-MNIST": "fashion_mnist",
    }
    precision = {"fp32": "off", "auto": "auto", "bf16": "bf16"}
    for name, row in rows.items():
        cfg = load_config(PretrainConfig, ROOT / "configs" / "pretrain" / name)
        arch, *traits = row["model"].split(", ")
        assert set(traits) <= {"small stem", "2-layer projector", "no stop-gradient"}, (name, traits)
        model = (
            archs[arch],
            "small stem" in traits,
            2 if "2-layer projector" in traits else 3,
            "no stop-gradient" not in traits,
        )
        assert (cfg.model.arch, cfg.model.small_stem, cfg.model.proj_layers, cfg.model.stop_gradient) == model, name
        data = re.fullmatch(r"([\w-]+), (\d+) px(?:, ([\d,]+) images)?", row["data"])
        subset = int(data[3].replace(",", "")) if data[3] else None
        assert (cfg.data.dataset, cfg.data.image_size, cfg.data.train_subset) == (
            datasets[data[1]],
            int(data[2]),
            subset,
        ), name
        optim = (int(row["epochs"]), int(row["batch"]), float(row["base lr"]), float(row["wd"]), row["lr schedule"])
        assert (
            cfg.optim.epochs,
            cfg.optim.batch_size,
            cfg.optim.base_lr,
            cfg.optim.weight_decay,
            cfg.optim.lr_schedule,
        ) == optim, name
        assert cfg.run.amp == precision[row["precision"]], name
        # "All use momentum 0.9, fix_pred_lr, output width 2048 and predictor width 512"
        assert (cfg.optim.momentum, cfg.optim.fix_pred_lr, cfg.model.dim, cfg.model.pred_dim) == (
            0.9,
            True,
            2048,
            512,
        ), name


def test_the_paper_named_configs_are_the_references_recipe():
    """facebookresearch/simsiam a7bc177 main_simsiam.py: --epochs 100 (l.47), --lr 0.05 (l.56),
    --momentum 0.9 (l.58), --wd 1e-4 (l.60), --fix-pred-lr (the README's command), the lr set at
    each epoch's start (l.257, l.359-366), no warm-up, fp32 (no autocast); the paper's batch 256
    (Table 4) and the official command's 512 (l.51); the MoCo v2 augmentation (simsiam/loader.py,
    RandomResizedCrop scale (0.2, 1), blur p=0.5). CIFAR-10: the paper's Appendix D."""
    recipe = dict(
        base_lr=0.05, momentum=0.9, weight_decay=1e-4, fix_pred_lr=True, lr_schedule="epoch", warmup_epochs=0.0
    )
    for name, (epochs, batch) in {
        "imagenet_resnet50_100ep.yaml": (100, 256),
        "imagenet_resnet50_100ep_bs512.yaml": (100, 512),
        "imagenet_resnet50_100ep_hf.yaml": (100, 256),  # the same recipe on the Hub's ILSVRC/imagenet-1k
        "imagenet_resnet50_200ep.yaml": (200, 256),
    }.items():
        cfg = load_config(PretrainConfig, ROOT / "configs" / "pretrain" / name)
        assert {key: getattr(cfg.optim, key) for key in recipe} == recipe, name
        assert (cfg.optim.epochs, cfg.optim.batch_size, cfg.run.amp) == (epochs, batch, "off"), name
        model = (
            cfg.model.arch,
            cfg.model.small_stem,
            cfg.model.dim,
            cfg.model.pred_dim,
            cfg.model.proj_layers,
            cfg.model.stop_gradient,
        )
        assert model == ("resnet50", False, 2048, 512, 3, True), name
        assert (cfg.data.image_size, cfg.data.min_scale, cfg.data.blur_prob, cfg.data.train_subset) == (
            224,
            0.2,
            0.5,
            None,
        ), name
    # Appendix D: base lr 0.03, cosine, 800 epochs, wd 0.0005, momentum 0.9, batch 512, 32x32, no blur,
    # the CIFAR variant of ResNet-18 and a 2-layer projection MLP, 2048-d outputs.
    cifar = load_config(PretrainConfig, ROOT / "configs" / "pretrain" / "cifar10_resnet18.yaml")
    optim = (
        cifar.optim.epochs,
        cifar.optim.batch_size,
        cifar.optim.base_lr,
        cifar.optim.weight_decay,
        cifar.optim.momentum,
    )
    assert optim == (800, 512, 0.03, 5e-4, 0.9)
    assert (cifar.optim.lr_schedule, cifar.optim.warmup_epochs, cifar.optim.fix_pred_lr, cifar.run.amp) == (
        "epoch",
        0.0,
        True,
        "off",
    )
    model = (cifar.model.arch, cifar.model.small_stem, cifar.model.proj_layers, cifar.model.dim, cifar.model.pred_dim)
    assert model == ("resnet18", True, 2, 2048, 512)
    assert (cifar.data.dataset, cifar.data.image_size, cifar.data.blur_prob) == ("cifar10", 32, 0.0)


def test_cli_reports_errors_in_one_line(tmp_path):
    code, log = run_cli("pretrain", "data.dataset=imagefolder", f"data.root={tmp_path / 'missing'}")
    assert code == 2  # a data.root that does not exist is a usage error, as a bad key or value
    code_usage, log_usage = run_cli("pretrain", "optim.epochs=0")
    assert (
        code_usage == 2
        and log_usage.strip().splitlines()[-1]
        == "simsiam-hub pretrain: error: config value optim.epochs=0 is invalid: expected a positive integer"
    )
    assert (
        log.strip().splitlines()[-1]
        == f"simsiam-hub pretrain: error: data.root does not exist: {tmp_path / 'missing'} (expected the dataset's folder)"
    )
    assert "Traceback" not in log
