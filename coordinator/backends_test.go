package coordinator

// cuda-shim (the CUDA backend on the CPU) is known to the tests, so that
// TINCT_BACKEND=cuda-shim puts the replicas there (make test).
import _ "github.com/tinct/tinct/cuda/shim"
