"""The facerecon service (``python -m service``)."""

import os

# One OpenBLAS thread per caller, set before numpy loads it: the request path's BLAS calls are small
# (decode_asm, unwrap, relight), and OpenBLAS's own pool, one thread per core and spinning after each
# call, fought onnxruntime's threads for the 2 cores: GLB p50 116 -> 147 ms without this, unwrap 17 -> 29
# ms (docs/service.md#latency). Requests already run side by side, as onnxruntime's inter-op setting says.
# An operator's own OPENBLAS_NUM_THREADS still wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
