"""vecnn vs PyTorch eager vs scikit-learn MLPClassifier on Fashion-MNIST, epochs alternating in one run.

python benchmarks/bench_mlp.py            # 784-256-128-10, batch 128, Adam lr 1e-3 (target >= 2x torch, >= 3x sklearn)
python benchmarks/bench_mlp.py wide       # 784-2048-2048-10, batch 512, SGD momentum 0.9 (target >= 75% of peak)
options: --epochs 3 --threads 2 --json out.json --no-memory --limit N --synthetic
"""

from vecnn.bench.mlp import main

if __name__ == "__main__":
    main()
