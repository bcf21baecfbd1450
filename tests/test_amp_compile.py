"""The speed switches: `run.amp` (precision.resolve_amp's choice, bf16 autocast in a training step)
and `run.compile`, on tiny runs.

On the CPU: bf16 autocast runs anywhere (emulated where the CPU has no bf16 units: slow, so the
network and images are tiny: at 16 px instead of 8 the bf16 run took 15 s of CPU time on an AMD
EPYC without bf16 units); torch.compile runs its graph capture (TorchDynamo) with the `eager`
backend, which runs the captured graphs op by op, because the default inductor backend's code
generation took 332 s (wall; 2 min 17 s of CPU time) for a tiny run on a shared 2-core AMD EPYC.
The tests marked `gpu` run bf16 and inductor on CUDA, and are skipped without a GPU.
"""

from __future__ import annotations

import csv

import pytest
import torch

from simsiam_hub.checkpoint import load_checkpoint
from simsiam_hub.config import PretrainConfig, load_config
from simsiam_hub.engine import Trainer, pretrain
from simsiam_hub.precision import resolve_amp

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def restore_global_torch_state():
    """run.deterministic=true turns on torch's deterministic mode for the process: put it back, so
    that the tests after these run as they would alone."""
    mode = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        yield
    torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])


def tiny(out, *extra):
    return load_config(
        PretrainConfig,
        None,
        [
            "data.dataset=synthetic",
            "data.synthetic_size=16",
            "data.image_size=8",
            "data.num_workers=0",
            "model.arch=resnet18",
            "model.small_stem=true",
            "model.dim=64",
            "model.pred_dim=16",
            "optim.batch_size=8",
            "optim.epochs=1",
            "monitor.knn_every_epochs=0",
            "run.max_steps=2",
            "run.log_every_steps=1",
            f"run.output_dir={out}",
            "run.progress=false",
            "run.tensorboard=false",
            "run.deterministic=true",
            *extra,
        ],
    )


def losses(out) -> list[float]:
    with open(out / "train_log.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def weights(result) -> dict[str, torch.Tensor]:
    return load_checkpoint(result.checkpoint)["model"]


# --- precision.resolve_amp ----------------------------------------------------------------------


def test_resolve_amp_explicit_choices():
    for device in (torch.device("cpu"), torch.device("cuda")):  # no CUDA needed: nothing is probed
        assert resolve_amp("off", device) is None
        assert resolve_amp("fp16", device) is torch.float16
        assert resolve_amp("bf16", device) is torch.bfloat16


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(False, False, None), (True, False, torch.bfloat16), (False, True, torch.bfloat16), (True, True, torch.bfloat16)],
)
def test_resolve_amp_auto_on_cpu_asks_for_native_bf16(monkeypatch, avx512_bf16, amx, expected):
    """auto is bf16 only on CPUs with AVX512-BF16 or AMX; oneDNN's own bf16 support (which it
    reports for any AVX-512 CPU, emulating it) does not count."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    assert resolve_amp("auto", torch.device("cpu")) is expected


def test_resolve_amp_auto_on_cpu_without_the_probes(monkeypatch):
    """A torch without the CPU probes (older versions): fp32."""
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert resolve_amp("auto", torch.device("cpu")) is None


@pytest.mark.parametrize(("bf16", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_resolve_amp_auto_on_cuda(monkeypatch, bf16, expected):
    """auto on a GPU: bf16 where it has it (Ampere and later), else fp16 (with the grad scaler)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_amp("auto", torch.device("cuda", 0)) is expected


@pytest.mark.parametrize("native", [False, True])
def test_trainer_takes_resolve_amps_choice_without_cuda(monkeypatch, tmp_path, native):
    """The trainer on a machine without CUDA: the CPU, and auto's choice from the CPU's probes;
    the grad scaler only for fp16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    trainer = Trainer(tiny(tmp_path, "run.amp=auto"), resume=None)
    assert trainer.context.device.type == "cpu"
    assert trainer.context.amp_dtype is (torch.bfloat16 if native else None)
    assert not trainer.scaler.is_enabled()


# --- bf16 autocast in a training step ----------------------------------------------------------


def bf16_run_against_fp32(tmp_path):
    """The same two steps in fp32 and under bf16 autocast: what ran in bf16, and how far apart."""
    seen = []
    original = Trainer.__init__

    def watching_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        # the first convolution's output: bf16 under autocast, fp32 without
        self.model.encoder.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "__init__", watching_init)
        fp32 = pretrain(tiny(tmp_path / "fp32", "run.amp=off"), resume=None)
        fp32_seen, seen[:] = list(seen), []
        bf16 = pretrain(tiny(tmp_path / "bf16", "run.amp=bf16"), resume=None)
    return fp32, bf16, fp32_seen, list(seen)


def check_bf16_against_fp32(tmp_path, fp32, bf16, fp32_seen, bf16_seen):
    assert set(fp32_seen) == {torch.float32} and set(bf16_seen) == {torch.bfloat16}
    assert len(bf16_seen) == len(fp32_seen) == 2 * 2  # two views a step, two steps
    a, b = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert len(a) == len(b) == 2
    # the loss itself is computed in fp32 from bf16 outputs: the same value to bf16's precision
    # (8 bits of mantissa, relative steps of 0.4%), in [-1, 1]
    for x, y in zip(a, b):
        assert abs(x - y) < 0.05, (a, b)
    assert fp32.step == bf16.step == 2
    wa, wb = weights(fp32), weights(bf16)
    for name, tensor in wb.items():
        assert tensor.dtype == wa[name].dtype, name  # the weights stay fp32 (autocast casts copies)
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), name
    # both start from the seed's initialisation; two steps in bf16 end near the fp32 ones, measured
    # against the update itself (a step that updated nothing would pass a bound on the weights)
    init = Trainer(tiny(tmp_path / "init", "run.amp=off"), resume=None).model.state_dict()
    for name in ("encoder.conv1.weight", "encoder.layer4.1.conv2.weight", "predictor.3.weight"):
        update = (wa[name] - init[name].to(wa[name].device)).norm()
        assert update > 0, name  # the fp32 steps did move the weights
        assert (wb[name] - init[name].to(wb[name].device)).norm() > 0.5 * update, name  # and so did bf16's
        assert (wb[name] - wa[name]).norm() < 0.25 * update, (name, (wb[name] - wa[name]).norm() / update)


def test_bf16_autocast_training_step_on_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fp32, bf16, fp32_seen, bf16_seen = bf16_run_against_fp32(tmp_path)
    check_bf16_against_fp32(tmp_path, fp32, bf16, fp32_seen, bf16_seen)


@pytest.mark.gpu
@needs_cuda
def test_bf16_autocast_training_step_on_cuda(tmp_path):
    assert resolve_amp("auto", torch.device("cuda")) is (
        torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    )
    fp32, bf16, fp32_seen, bf16_seen = bf16_run_against_fp32(tmp_path)
    check_bf16_against_fp32(tmp_path, fp32, bf16, fp32_seen, bf16_seen)


# --- run.compile ---------------------------------------------------------------------------------


def compiled_against_eager(tmp_path, backend: str | None):
    """Two steps with run.compile=true (torch.compile, on ``backend``: None is torch's default)
    and without: the graphs TorchDynamo captured, and both runs' results."""
    graphs = []
    real_compile = torch.compile

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend(backend or "inductor")(gm, example_inputs)

    def compile_with_counting(model, *args, **kwargs):
        kwargs["backend"] = counting_backend
        return real_compile(model, *args, **kwargs)

    torch._dynamo.reset()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "compile", compile_with_counting)
        eager = pretrain(tiny(tmp_path / "eager", "run.amp=off"), resume=None)
        assert graphs == []  # run.compile=false compiles nothing
        compiled = pretrain(tiny(tmp_path / "compiled", "run.amp=off", "run.compile=true"), resume=None)
    torch._dynamo.reset()
    return graphs, eager, compiled


def check_compiled_against_eager(tmp_path, graphs, eager, compiled, rtol, atol):
    # the SimSiam forward was captured: its convolutions and BatchNorms are in the graphs
    ops = [
        str(node.target)
        for gm in graphs
        for node in gm.graph.nodes
        if node.op in ("call_function", "call_module", "call_method")
    ]
    assert sum("conv" in op for op in ops) >= 2 * 20, ops[:20]  # ResNet-18: 20 convolutions per view
    a, b = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert abs(x - y) <= atol + rtol * abs(x), (a, b)
    wa, wb = weights(eager), weights(compiled)
    assert wa.keys() == wb.keys()  # no `_orig_mod.` in the checkpoint: the plain model is saved
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=rtol, atol=atol, msg=name)


def test_compile_trains_a_tiny_run_on_cpu(monkeypatch, tmp_path):
    """run.compile=true: TorchDynamo captures the model's forward (both views), training goes
    through the compiled module, and two steps give the eager run's losses and weights."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    graphs, eager, compiled = compiled_against_eager(tmp_path, "eager")
    check_compiled_against_eager(tmp_path, graphs, eager, compiled, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@needs_cuda
def test_compile_with_inductor_on_cuda(tmp_path):
    """The default backend (inductor, Triton kernels) on a GPU: the eager run's losses and
    weights, up to the rounding of kernels that fuse and sum in another order."""
    graphs, eager, compiled = compiled_against_eager(tmp_path, None)
    check_compiled_against_eager(tmp_path, graphs, eager, compiled, rtol=1e-3, atol=1e-4)
