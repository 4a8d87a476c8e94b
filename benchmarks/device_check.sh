#!/usr/bin/env bash
# The one command for a lent NVIDIA machine (no internet, minutes of machine time):
#
#     bash benchmarks/device_check.sh          # from the repository root (or anywhere)
#
# Steps, each bounded by a timeout and each run whatever happened to the ones before:
#   1. the machine: nvidia-smi, python3, which modules are here (nothing is installed: vecnn is
#      used from this checkout through PYTHONPATH; missing ones are listed, not fatal)
#   2. `vecnn backends`: which backend computes what here (CuPy on the GPU or why not)
#   3. the GPU tests: tests/test_cupy_backend.py and tests/test_ops.py (those present)
#   4. benchmarks/bench_gpu.py: vecnn vs PyTorch on the GPU, and the CPU-vs-GPU weight check
# Everything printed goes to $OUT/device_check.log too; the benchmark writes $OUT/gpu.json and the
# tests $OUT/pytest-junit.xml. $OUT comes from the runner (default: ./device-out).
# The whole script keeps to $DEVICE_CHECK_SECONDS (default 450 s, 7.5 min): later steps get what
# the earlier ones left, the benchmark at least BENCH_MIN seconds of it.
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
OUT=${OUT:-$ROOT/device-out}
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/device_check.log
PY=${PYTHON:-python3}
TOTAL=${DEVICE_CHECK_SECONDS:-450}
BENCH_MIN=240
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# DEVICE_CHECK_TESTS overrides the test files (space-separated); PYTHON the interpreter.
# the training data, when the runner carried it here (else vecnn's usual places, else random data)
if [ -z "${VECNN_DATA:-}" ] && [ -d "$ROOT/shared/fashion-mnist" ]; then
    export VECNN_DATA=$ROOT/shared
fi

step() {
    echo
    echo "=== $* [$(date +%H:%M:%S), ${SECONDS}s into the check]"
}

left() {                                   # seconds left of the whole check
    echo $((TOTAL - SECONDS))
}

bounded() {                                # bounded SECONDS CMD...: run CMD with a timeout, say how it ended
    local limit=$1
    shift
    if [ "$limit" -lt 5 ]; then
        echo "--- skipped: no time left"
        return 124
    fi
    timeout -k 10 "$limit" "$@"
    local rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "--- TIMED OUT after ${limit}s (exit $rc)"
    else
        echo "--- exit $rc"
    fi
    return "$rc"
}

min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

main() {
    step "the machine"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  host: $(hostname)  kernel: $(uname -r)  cores: $(nproc)"
    echo "checkout: $ROOT  (git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo "OUT: $OUT  VECNN_DATA: ${VECNN_DATA:-(not set)}  python: $(command -v "$PY" || echo "$PY: NOT FOUND")"
    free -g 2>/dev/null | head -2
    if command -v nvidia-smi >/dev/null; then
        bounded 30 nvidia-smi
    else
        echo "nvidia-smi: not found"
    fi

    step "python modules (nothing is installed here: no internet)"
    bounded 90 "$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
groups = {
    "compute": ["numpy", "cupy", "torch", "numba", "llvmlite", "mpi4py"],
    "vecnn's own dependencies": ["tqdm", "safetensors", "threadpoolctl", "matplotlib", "PIL"],
    "tests": ["pytest", "hypothesis", "sklearn"],
}
missing = []
for group, names in groups.items():
    print(f"{group}:")
    for name in names:
        try:
            m = importlib.import_module(name)
            extra = ""
            if name == "torch":
                extra = f", CUDA {m.version.cuda}, cuda available: {m.cuda.is_available()}"
                if m.cuda.is_available():
                    extra += f", {m.cuda.get_device_name(0)}"
            if name == "cupy":
                extra = f", CUDA runtime {m.cuda.runtime.runtimeGetVersion()}, devices {m.cuda.runtime.getDeviceCount()}"
            print(f"  {name:<14} {getattr(m, '__version__', '?')}{extra}")
        except Exception as e:
            print(f"  {name:<14} MISSING ({type(e).__name__}: {e})")
            missing.append(name)
try:
    import vecnn, vecnn.ops
    print(f"vecnn {vecnn.__version__} from {vecnn.__file__}")
except Exception as e:
    print(f"vecnn: FAILED TO IMPORT ({type(e).__name__}: {e})")
if missing:
    print("MISSING here: " + ", ".join(missing) + " (not installed by this check; what needs them says so below)")
EOF

    step "vecnn backends"
    if ! bounded "$(min 120 "$(left)")" "$PY" -m vecnn.cli backends; then
        echo "(vecnn.cli backends failed; the report straight from vecnn.ops:)"
        bounded "$(min 120 "$(left)")" "$PY" -c "import vecnn.ops as o; print(o.format_report())"
    fi

    step "GPU tests"
    local tests=()
    for t in ${DEVICE_CHECK_TESTS:-tests/test_cupy_backend.py tests/test_ops.py}; do
        [ -f "$t" ] && tests+=("$t")
    done
    if [ "${#tests[@]}" -eq 0 ]; then
        echo "no test files found"
    elif ! "$PY" -c "import pytest" 2>/dev/null; then
        echo "pytest is not installed here: tests skipped"
    else
        local stub=""
        if ! "$PY" -c "import hypothesis" 2>/dev/null; then
            # tests/conftest.py only sets hypothesis's profile; a stand-in lets the tests run without it
            stub=$(mktemp -d)
            mkdir -p "$stub/hypothesis"
            printf '%s\n' "class settings:" \
                "    @staticmethod" "    def register_profile(*a, **k): pass" \
                "    @staticmethod" "    def load_profile(*a, **k): pass" > "$stub/hypothesis/__init__.py"
            echo "(hypothesis missing: a stand-in for conftest.py's profile settings is on the path)"
        fi
        local budget
        budget=$(min 180 $(($(left) - BENCH_MIN)))
        echo "pytest ${tests[*]} (at most ${budget}s)"
        PYTHONPATH="$PYTHONPATH${stub:+:$stub}" bounded "$budget" "$PY" -m pytest -q -p no:cacheprovider -rfEs \
            --durations=5 --junitxml="$OUT/pytest-junit.xml" "${tests[@]}"
        [ -n "$stub" ] && rm -rf "$stub"
    fi

    step "benchmark: vecnn vs PyTorch on the GPU, CPU-vs-GPU weight check"
    local limit bench_budget
    limit=$(min 300 $(($(left) - 5)))
    bench_budget=$(min 200 $((limit - 70)))       # the benchmark's own start-up and a margin
    [ "$bench_budget" -lt 30 ] && bench_budget=30
    echo "bench_gpu.py --budget $bench_budget (killed after ${limit}s)"
    bounded "$limit" "$PY" benchmarks/bench_gpu.py --epochs 5 --budget "$bench_budget" --json "$OUT/gpu.json"
    local rc=$?

    step "done (the benchmark's exit status: $rc)"
    ls -l "$OUT"
    return "$rc"
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
