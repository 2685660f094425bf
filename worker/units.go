package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The one reading of durations and sizes written by people: the config
// file, the per-call overrides of an HTTP read (_expires=2.5) and the
// countdown of an invalidation body all go through ParseDuration, the
// config file's sizes and --memory through ParseSize. They live here, the
// package every reader of them imports.

// maxSeconds bounds a duration given as seconds (about 31 years): past it a
// number is a typo, and time.Duration overflows at 292 years.
const maxSeconds = 1e9

// ParseDuration reads a duration as people write it: a Go duration
// ("100ms", "1h30m") or a number of seconds ("30", "2.5"). Negative
// durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	d, err := time.ParseDuration(t)
	if err != nil {
		f, ferr := strconv.ParseFloat(t, 64)
		if ferr != nil || math.IsNaN(f) || math.Abs(f) > maxSeconds {
			return 0, fmt.Errorf("bad duration %q: want a duration such as 100ms or 1h, or seconds such as 2.5", s)
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return d, nil
}

// ConfigDuration is a time.Duration as a config file, a query or a JSON
// body writes it, read by [ParseDuration] from YAML, from JSON (a string,
// or a number of seconds) and from text. It writes itself in the Go form
// ("5s").
type ConfigDuration time.Duration

// String returns the Go form of d.
func (d ConfigDuration) String() string { return time.Duration(d).String() }

// MarshalText writes the Go form ("5s"); JSON and YAML use it.
func (d ConfigDuration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads d with [ParseDuration].
func (d *ConfigDuration) UnmarshalText(b []byte) error {
	p, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = ConfigDuration(p)
	return nil
}

// UnmarshalJSON reads a JSON string with [ParseDuration], or a JSON number
// as seconds; null leaves d unchanged.
func (d *ConfigDuration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case string(b) == "null":
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		return d.UnmarshalText([]byte(s))
	}
	return d.UnmarshalText(b)
}

// UnmarshalYAML reads a scalar with [ParseDuration]. Its errors name the
// line, and yaml.v3 goes on to report the document's other errors.
func (d *ConfigDuration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return yamlError(n, fmt.Errorf("want a duration such as 100ms or 1h, or seconds, got a %s", kindName(n.Kind)))
	}
	return yamlError(n, d.UnmarshalText([]byte(n.Value)))
}

// ParseSize reads a size in bytes as people write it: a number of bytes
// ("1048576") or a number with one of the units B, KiB, MiB, GiB, TiB
// ("256MiB", "1.5 GiB"). Negative sizes and sizes of 4 EiB or more are
// refused.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := 1.0
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f*mult > 1<<62 {
		return 0, fmt.Errorf("bad size %q: want bytes, or a number with KiB, MiB or GiB, e.g. 256MiB", s)
	}
	return int64(f * mult), nil
}

// ConfigSize is a number of bytes as a config file writes it, read by
// [ParseSize] from YAML and from text.
type ConfigSize int64

// UnmarshalText reads z with [ParseSize].
func (z *ConfigSize) UnmarshalText(b []byte) error {
	p, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*z = ConfigSize(p)
	return nil
}

// UnmarshalYAML reads a scalar with [ParseSize]. Its errors name the line,
// and yaml.v3 goes on to report the document's other errors.
func (z *ConfigSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return yamlError(n, fmt.Errorf("want a size such as 256MiB, got a %s", kindName(n.Kind)))
	}
	return yamlError(n, z.UnmarshalText([]byte(n.Value)))
}

// yamlError makes err a yaml.TypeError on n's line: yaml.v3 collects those
// with its own (which carry their line the same way) instead of stopping
// at the first with no line at all.
func yamlError(n *yaml.Node, err error) error {
	if err == nil {
		return nil
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "node"
}
