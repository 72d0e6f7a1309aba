// Package demo is the bundled demo model: EMA weights of a small run on the
// repository's own sample photographs (data/sample, 64×64), embedded in the
// binary so that tinct colorize and tinct serve work on a fresh clone with
// no training. MODEL.md beside this file is its model card: data and
// licence, steps, wall time, measured quality, and what it is not good at.
package demo

import (
	_ "embed"

	"github.com/tinct/tinct/trainstate"
)

//go:embed ema.safetensors
var weights []byte

// Name is how logs and the web app name the demo model.
const Name = "demo"

// Card is where the model card lives in the repository.
const Card = "demo/MODEL.md"

// Load decodes the embedded weights (a fresh network each call).
func Load() (*trainstate.Weights, error) {
	return trainstate.ReadWeights(weights)
}
