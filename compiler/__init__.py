"""The compiler: ONNX frontend, IR, op registry, executor, passes, quantisers and emitters.

Importing it sets how idle worker threads wait, unless the user already chose. Numba's
parallel kernels (OpenMP) and numpy's BLAS (OpenBLAS) keep separate thread pools on the same
cores, and by default both spin for a while after each call: the pipeline alternates them, so
each ran 3-8x slower while the other's threads spun (measured on 2 cores: a 512^3 SGEMM after a
numba kernel 6.3 -> 1.9 ms, the kernel after the SGEMM 2.8 -> 0.5 ms). OpenBLAS reads its
setting when it loads, so it takes effect only if numpy is imported after this package.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # spin 2^4 cycles, then sleep
