#!/usr/bin/env bash
# The GPU figures of data.augment_on=device and the GPU-marked tests, in one run; its duration has
# not been measured (no run of it is recorded). Each part runs under a time limit (585 s at most in all), so
# a part that hangs costs only its own figures. Each part's output goes to OUTDIR/NAME.txt.
#
#   bash bench/gpu_check.sh OUTDIR
#   WHEELS=DIR bash bench/gpu_check.sh OUTDIR    # first install the wheels in DIR (offline machines)
#
# Needs python3 (or $PYTHON) with torch (CUDA), torchvision and simsiam-hub's dependencies, run
# from the repository's root. A machine without network that has torch but not omegaconf: make
# the two pure-Python wheels it lacks where pip reaches the registry,
#   pip wheel --no-deps -w DIR omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
# and pass WHEELS=DIR. fvcore is optional (without it the step table shows no TFLOP/s).
# The *_EXTRA variables append arguments to a part (the last value of a flag wins), e.g. a dry
# run on a CPU: STEP_EXTRA="--arch resnet18 --size 32 --batch-size 8 --steps 1" ...
set -u
OUT=${1:-gpu_check_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/simsiam_site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/simsiam_site"
fi

part() {  # part NAME SECONDS COMMAND...: the output to OUTDIR/NAME.txt too, under a time limit
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "=== $name (limit ${limit}s): $*" | tee "$OUT/$name.txt"
  timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$OUT/$name.txt"
}

part env 30 bash -c "nvidia-smi; nproc; free -g; df -h /dev/shm; \"$PY\" -c 'import torch, torchvision, PIL; print(\"torch\", torch.__version__, \"torchvision\", torchvision.__version__, \"Pillow\", PIL.__version__, torch.cuda.get_device_name())'"
# The device path's tests, the CUDA ones included (on this machine's CPU, the CPU ones too).
part tests 100 "$PY" -m pytest -q -p no:cacheprovider tests/test_device_augment.py ${TESTS_EXTRA:-}
# End to end from 2048 generated JPEGs, one loader worker per core: reference, ours-loader, ours-device.
part e2e 140 "$PY" bench/end_to_end.py --jpeg-dir /tmp/simsiam_jpegs ${E2E_EXTRA:-}
# The training step, ResNet-50 224 px batch 256: reference (fp32, NCHW) against ours (bf16,
# channels_last), interleaved; eager first, then with torch.compile as a third variant (its
# compilation takes a minute or two: should it run out of time, the eager figures stand).
part step 60 "$PY" bench/pretrain_throughput.py --skip-aug --steps 10 ${STEP_EXTRA:-}
part step_compile 210 "$PY" bench/pretrain_throughput.py --skip-aug --compile --steps 10 ${STEP_EXTRA:-}
# The loader's work per core on this machine's CPU: reference, fast, and the device path's crop only.
part augment 45 "$PY" bench/pretrain_throughput.py --skip-train --aug-repeats 3 ${AUG_EXTRA:-}
