"""vecnn vs every CPU peer training an MLP on Fashion-MNIST, each in its own process, epochs alternating.

Contenders: vecnn, PyTorch eager, torch.compile (mode default; needs g++ or $CXX), JAX (a jitted
loss+grad+optax step), Keras 3 and scikit-learn's MLPClassifier (mlp only). Each is optional but
vecnn; one whose environment or package is missing, or whose compilation fails, is skipped with
the reason. JAX and Keras usually live in environments of their own:

    python3 -m venv ENV_JAX && ENV_JAX/bin/pip install jax jaxlib optax numpy threadpoolctl
    python3 -m venv ENV_TF && ENV_TF/bin/pip install tensorflow keras numpy threadpoolctl

python benchmarks/bench_mlp.py            # 784-256-128-10, batch 128, Adam lr 1e-3 (target >= 2x torch, >= 3x sklearn)
python benchmarks/bench_mlp.py wide       # 784-2048-2048-10, batch 512, SGD momentum 0.9 (target >= 75% of peak)
python benchmarks/bench_mlp.py --jax-python ENV_JAX/bin/python --keras-python ENV_TF/bin/python
python benchmarks/bench_mlp.py --contenders vecnn,pytorch --limit 512 --epochs 1    # a smoke run
options: --epochs 3 --threads 2 --json out.json --no-memory --limit N --synthetic --warmup-batches 5
         --contenders vecnn,pytorch,torch.compile,jax,keras,scikit-learn (default: all the config's)
         --jax-python P --keras-python P --torch-python P --sklearn-python P (default: this interpreter)
Printed per contender: median and best epoch, samples/s, vecnn's speed-up (ratio of median epoch
times), test accuracy, compile seconds (first calls, apart from the epochs), peak RSS increase,
parameter count, the framework's kernels and the BLAS it ran on (threadpoolctl).
"""

from vecnn.bench.mlp import main

if __name__ == "__main__":
    main()
