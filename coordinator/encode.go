package coordinator

import (
	"bytes"
	"io"

	"github.com/tinct/tinct/model"
)

func encode(ts map[string]model.Tensor) ([]byte, error) {
	var b bytes.Buffer
	err := model.WriteSafetensors(&b, ts, map[string]string{"format": "pt"})
	return b.Bytes(), err
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
