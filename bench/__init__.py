"""`python -m bench`: the gpuf-s performance benchmark of issue 8 (see bench/README.md)."""

# The Redis key whose value the bench-only route serves (bench/app.py) and the benchmark stores.
VALUE_KEY = "gpufs-bench:value"
