// Package model is tinct's diffusion colorizer: the U-Net of docs/design.md §1
// built on package nn, the offset cosine schedule, the noise-prediction
// training step with Adam and EMA, the DDIM sampler, and safetensors I/O with
// PyTorch's parameter names.
package model
