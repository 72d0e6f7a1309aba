// Package demo is the bundled demo model: EMA weights of a small run on the
// repository's own sample photographs (data/sample, 64×64), embedded in the
// binary so that tinct colorize and tinct serve work on a fresh clone with
// no training. MODEL.md beside this file is its model card: data and
// licence, steps, wall time, measured quality, and what it is not good at.
package demo

import (
	_ "embed"
	"regexp"
	"time"

	"github.com/tinct/tinct/trainstate"
)

//go:embed ema.safetensors
var weights []byte

//go:embed MODEL.md
var card string

// Name is how logs and the web app name the demo model.
const Name = "demo"

// Card is where the model card lives in the repository.
const Card = "demo/MODEL.md"

// Load decodes the embedded weights (a fresh network each call), named
// Name and dated by the model card (Date).
func Load() (*trainstate.Network, error) {
	n, err := trainstate.ReadWeights(weights)
	if err != nil {
		return nil, err
	}
	n.Name, n.Time = Name, Date()
	return n, nil
}

// cardDate is the model card's "date" row: | date | YYYY-MM-DD …|.
var cardDate = regexp.MustCompile(`(?m)^\| date \| (\d{4}-\d{2}-\d{2})\b`)

// Date is when the demo model was trained, from its model card (the
// weights file records no time): midnight UTC of the card's date, or the
// zero time if the card has none.
func Date() time.Time {
	m := cardDate.FindStringSubmatch(card)
	if m == nil {
		return time.Time{}
	}
	t, err := time.Parse(time.DateOnly, m[1])
	if err != nil {
		return time.Time{}
	}
	return t
}
