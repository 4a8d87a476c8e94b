"""vecnn vs PyTorch eager vs scikit-learn MLPClassifier on Fashion-MNIST (784-256-128-10, batch 128, Adam).

    python benchmarks/bench_mlp.py [--epochs 3] [--threads 2] [--json out.json]
"""
from vecnn.bench.mlp import main

if __name__ == "__main__":
    main()
