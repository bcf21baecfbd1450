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
from simsiam_hub.config import ConfigError, PretrainConfig, load_config
from simsiam_hub.engine import NonFiniteLossError, list_checkpoints, load_checkpoint, pretrain

ROOT = Path(__file__).resolve().parents[1]


def tiny(out, *extra):
    return [
        "data.dataset=synthetic", "data.synthetic_size=64", "data.image_size=16", "data.num_workers=0",
        "model.arch=resnet18", "model.small_stem=true", "model.dim=64", "model.pred_dim=16",
        "optim.batch_size=16", "optim.epochs=2", "monitor.knn_every_epochs=0",
        f"run.output_dir={out}", "run.progress=false", "run.tensorboard=false", "run.deterministic=true",
        "run.amp=off", *extra,
    ]  # fmt: skip


def cli(*args, nproc=None, env=None, **kwargs):
    launcher = [sys.executable, "-m", "simsiam_hub.cli"]
    if nproc:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "simsiam_hub.cli"]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([*launcher, *args], cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def run_cli(*args, **kwargs):
    proc = cli(*args, **kwargs)
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def final_model(out):
    return load_checkpoint(list_checkpoints(out)[0])["model"]


def test_ddp_two_processes_match_one_process(tmp_path):
    """2 ranks x 8 images with SyncBN == 1 rank x 16 images: same weights after 4 steps.

    NCHW here: channels_last convolutions on the CPU pick other fp32 kernels, whose rounding
    differences outgrow the tolerance (tests/test_distributed.py checks the mechanism in fp64).
    """
    args = ("run.max_steps=4", "run.channels_last=false")
    code, log = run_cli("pretrain", *tiny(tmp_path / "one", *args))
    assert code == 0, log
    code, log = run_cli("pretrain", *tiny(tmp_path / "two", *args), nproc=2)
    assert code == 0, log
    one, two = final_model(tmp_path / "one"), final_model(tmp_path / "two")
    assert load_checkpoint(list_checkpoints(tmp_path / "two")[0])["world_size"] == 2
    assert one.keys() == two.keys()
    torch.manual_seed(0)  # the runs' seed: the common initialisation
    init = engine.SimSiam("resnet18", 64, 16, small_stem=True).state_dict()
    moved = 0
    for key in one:
        if not one[key].is_floating_point():
            assert torch.equal(one[key], two[key]), key
            continue
        update = (one[key] - init[key]).norm()
        moved += bool(update > 0)
        # fp32 sums in another order: the runs may differ by a tiny fraction of what training moved
        assert (one[key] - two[key]).norm() <= 1e-3 * update + 1e-6, key
    assert moved > 50  # the runs did train


def test_knn_every_steps_also_runs_on_epoch_ends(tmp_path):
    # 4 steps an epoch, a check every 2 steps and none per epoch: steps 2, 4 (an epoch end), 6, 8.
    cfg = load_config(PretrainConfig, None, tiny(tmp_path, "monitor.knn_every_steps=2", "monitor.knn_bank_size=32", "monitor.knn_query_size=16"))
    pretrain(cfg, resume=None)
    with open(tmp_path / "epoch_log.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["knn_top1"]]
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]


def test_the_engine_sets_the_lr_once_per_epoch(tmp_path):
    """optim.lr_schedule=epoch in a real run (per step, the default, is what every other test here
    runs; both schedules' values are checked in test_optim.py)."""
    # 2 epochs of 4 steps of batch 4, every step logged; init lr 0.05 * 4 / 256.
    small = ("data.synthetic_size=16", "optim.batch_size=4", "data.image_size=8", "optim.lr_schedule=epoch", "run.log_every_steps=1")
    pretrain(load_config(PretrainConfig, None, tiny(tmp_path, *small)), resume=None)
    with open(tmp_path / "train_log.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    init = 0.05 * 4 / 256  # main_simsiam.py's adjust_learning_rate at each epoch start: cos(pi * e / 2)
    assert lrs == pytest.approx([init] * 4 + [init * 0.5 * (1 + math.cos(math.pi / 2))] * 4, rel=1e-5)


def test_global_batch_must_divide_over_ranks(tmp_path):
    code, log = run_cli("pretrain", *tiny(tmp_path, "optim.batch_size=15"), nproc=2)
    assert code != 0
    assert "optim.batch_size=15 does not divide over 2 processes" in log


def test_sigkill_then_resume_gives_the_same_weights(tmp_path):
    args = ("run.checkpoint_every_steps=2", "optim.epochs=3")  # 12 steps
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
    found = re.search(r"stopped by SIGINT at step (\d+) of 100 \(epoch [\d.]+\); checkpoint (\S+): the same command resumes", text)
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
    from simsiam_hub.hub import export, from_pretrained

    result = pretrain(load_config(PretrainConfig, None, tiny(tmp_path / "run", "model.proj_layers=2", "run.max_steps=1")))
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
    with pytest.raises(engine.CheckpointError, match="not a simsiam-hub training checkpoint.*found keys \\['state_dict'\\]"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(engine.CheckpointError, match="not a readable training checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.bogus=1", "unknown config key 'optim.bogus'"),
        ("optim.epochs=0", "optim.epochs=0 is invalid"),
        ("model.arch=vgg16", "model.arch='vgg16' is invalid: expected one of"),
        ("run.amp=fp8", "run.amp='fp8' is invalid"),
        ("monitor.collapse_warn_share=1.5", r"monitor.collapse_warn_share=1.5 is invalid: expected a number in \(0, 1\]"),
        ("optim.base_lr=fast", "config key 'optim.base_lr'"),
        ("optim.epochs", "not of the form key=value"),
    ],
)
def test_bad_config_is_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainConfig, None, [override])


def readme_pretrain_configs() -> dict[str, dict[str, str]]:
    """The config table of README.md's "Pretraining" section: config file -> {column: cell}."""
    section = (ROOT / "README.md").read_text().split("\n## Pretraining\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip().strip("|").split("|")]
    assert header[:3] == ["config", "model", "data"], header
    rows = [dict(zip(header, (cell.strip() for cell in line.strip().strip("|").split("|")))) for line in lines[1:]]
    return {row["config"].strip("`"): row for row in rows}


def test_every_shipped_pretrain_config_is_what_the_readme_says():
    rows = readme_pretrain_configs()
    assert sorted(rows) == sorted(p.name for p in (ROOT / "configs" / "pretrain").glob("*.yaml"))
    archs = {"ResNet-18": "resnet18", "ResNet-50": "resnet50"}
    datasets = {"ImageNet": "imagefolder", "CIFAR-10": "cifar10", "Fashion-MNIST": "fashion_mnist"}
    precision = {"fp32": "off", "auto": "auto", "bf16": "bf16"}
    for name, row in rows.items():
        cfg = load_config(PretrainConfig, ROOT / "configs" / "pretrain" / name)
        arch, *traits = row["model"].split(", ")
        assert set(traits) <= {"small stem", "2-layer projector", "no stop-gradient"}, (name, traits)
        model = (archs[arch], "small stem" in traits, 2 if "2-layer projector" in traits else 3, "no stop-gradient" not in traits)
        assert (cfg.model.arch, cfg.model.small_stem, cfg.model.proj_layers, cfg.model.stop_gradient) == model, name
        data = re.fullmatch(r"([\w-]+), (\d+) px(?:, ([\d,]+) images)?", row["data"])
        subset = int(data[3].replace(",", "")) if data[3] else None
        assert (cfg.data.dataset, cfg.data.image_size, cfg.data.train_subset) == (datasets[data[1]], int(data[2]), subset), name
        optim = (int(row["epochs"]), int(row["batch"]), float(row["base lr"]), float(row["wd"]), row["lr schedule"])
        assert (cfg.optim.epochs, cfg.optim.batch_size, cfg.optim.base_lr, cfg.optim.weight_decay, cfg.optim.lr_schedule) == optim, name
        assert cfg.run.amp == precision[row["precision"]], name
        # "All use momentum 0.9, fix_pred_lr, output width 2048 and predictor width 512"
        assert (cfg.optim.momentum, cfg.optim.fix_pred_lr, cfg.model.dim, cfg.model.pred_dim) == (0.9, True, 2048, 512), name


def test_the_paper_named_configs_are_the_references_recipe():
    """facebookresearch/simsiam a7bc177 main_simsiam.py: --epochs 100 (l.47), --lr 0.05 (l.56),
    --momentum 0.9 (l.58), --wd 1e-4 (l.60), --fix-pred-lr (the README's command), the lr set at
    each epoch's start (l.257, l.359-366), no warm-up, fp32 (no autocast); the paper's batch 256
    (Table 4) and the official command's 512 (l.51); the MoCo v2 augmentation (simsiam/loader.py,
    RandomResizedCrop scale (0.2, 1), blur p=0.5). CIFAR-10: the paper's Appendix D."""
    recipe = dict(base_lr=0.05, momentum=0.9, weight_decay=1e-4, fix_pred_lr=True, lr_schedule="epoch", warmup_epochs=0.0)
    for name, (epochs, batch) in {"imagenet_resnet50_100ep.yaml": (100, 256), "imagenet_resnet50_100ep_bs512.yaml": (100, 512),
                                  "imagenet_resnet50_200ep.yaml": (200, 256)}.items():  # fmt: skip
        cfg = load_config(PretrainConfig, ROOT / "configs" / "pretrain" / name)
        assert {key: getattr(cfg.optim, key) for key in recipe} == recipe, name
        assert (cfg.optim.epochs, cfg.optim.batch_size, cfg.run.amp) == (epochs, batch, "off"), name
        model = (cfg.model.arch, cfg.model.small_stem, cfg.model.dim, cfg.model.pred_dim, cfg.model.proj_layers, cfg.model.stop_gradient)
        assert model == ("resnet50", False, 2048, 512, 3, True), name
        assert (cfg.data.image_size, cfg.data.min_scale, cfg.data.blur_prob, cfg.data.train_subset) == (224, 0.2, 0.5, None), name
    # Appendix D: base lr 0.03, cosine, 800 epochs, wd 0.0005, momentum 0.9, batch 512, 32x32, no blur,
    # the CIFAR variant of ResNet-18 and a 2-layer projection MLP, 2048-d outputs.
    cifar = load_config(PretrainConfig, ROOT / "configs" / "pretrain" / "cifar10_resnet18.yaml")
    optim = (cifar.optim.epochs, cifar.optim.batch_size, cifar.optim.base_lr, cifar.optim.weight_decay, cifar.optim.momentum)
    assert optim == (800, 512, 0.03, 5e-4, 0.9)
    assert (cifar.optim.lr_schedule, cifar.optim.warmup_epochs, cifar.optim.fix_pred_lr, cifar.run.amp) == ("epoch", 0.0, True, "off")
    model = (cifar.model.arch, cifar.model.small_stem, cifar.model.proj_layers, cifar.model.dim, cifar.model.pred_dim)
    assert model == ("resnet18", True, 2, 2048, 512)
    assert (cifar.data.dataset, cifar.data.image_size, cifar.data.blur_prob) == ("cifar10", 32, 0.0)


def test_cli_reports_errors_in_one_line(tmp_path):
    code, log = run_cli("pretrain", "data.dataset=imagefolder", f"data.root={tmp_path / 'missing'}")
    assert code == 2
    assert log.strip().splitlines()[-1] == f"simsiam-hub pretrain: error: data.root does not exist: {tmp_path / 'missing'}"
    assert "Traceback" not in log
