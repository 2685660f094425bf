package resp

import (
	"bytes"
	"encoding/json"
)

// jsonMarshal encodes v as the HTTP API does: no HTML escaping (keys hold
// & and < often), no trailing newline.
func jsonMarshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
