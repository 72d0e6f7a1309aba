// Package configs holds the default training configuration, embedded in the
// binary so that tinct runs with no file beside it.
package configs

import _ "embed"

// Default is configs/config.yaml.
//
//go:embed config.yaml
var Default []byte
