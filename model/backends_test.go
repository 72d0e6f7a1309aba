package model

// cuda-shim (TINCT_BACKEND=cuda-shim): the CUDA backend with its kernels
// compiled by g++, registered by importing its package.
import _ "github.com/tinct/tinct/cuda/shim"
