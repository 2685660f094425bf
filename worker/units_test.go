package worker

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"100ms": 100 * time.Millisecond, "1h": time.Hour, "30": 30 * time.Second,
		"0.5": 500 * time.Millisecond, "2.5": 2500 * time.Millisecond, " 2s ": 2 * time.Second, "0": 0} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "soon", "-1s", "-5", "NaN", "Inf", "1e10", "5 s"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1024": 1024, "1KiB": 1024, "256MiB": 256 << 20, "1.5 GiB": 3 << 29, "2TiB": 2 << 40, "7B": 7} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1", "1KB", "MiB", "1e30GiB", "NaN"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

// TestDurationEncodings: JSON takes strings and numbers of seconds, YAML
// scalars, and both report a bad value; YAML names its line.
func TestDurationEncodings(t *testing.T) {
	var v struct {
		D ConfigDuration `json:"d" yaml:"d"`
	}
	for in, want := range map[string]time.Duration{`{"d":"1.5s"}`: 1500 * time.Millisecond, `{"d":2}`: 2 * time.Second, `{"d":"2.5"}`: 2500 * time.Millisecond} {
		if err := json.Unmarshal([]byte(in), &v); err != nil || time.Duration(v.D) != want {
			t.Errorf("%s: %v %v", in, v.D, err)
		}
	}
	v.D = ConfigDuration(2500 * time.Millisecond)
	if b, err := json.Marshal(v); err != nil || string(b) != `{"d":"2.5s"}` {
		t.Errorf("marshal: %s %v", b, err)
	}
	if err := json.Unmarshal([]byte(`{"d":"soon"}`), &v); err == nil || !strings.Contains(err.Error(), `bad duration "soon"`) {
		t.Errorf("bad JSON duration: %v", err)
	}
	if err := yaml.Unmarshal([]byte("d: 0.25\n"), &v); err != nil || time.Duration(v.D) != 250*time.Millisecond {
		t.Errorf("yaml: %v %v", v.D, err)
	}
	err := yaml.Unmarshal([]byte("x: 1\n\nd: soon\n"), &struct {
		D ConfigDuration `yaml:"d"`
	}{})
	if err == nil || !strings.Contains(err.Error(), `line 3: bad duration "soon"`) {
		t.Errorf("bad YAML duration: %v", err)
	}
	if err := yaml.Unmarshal([]byte("d: [1]\n"), &v); err == nil || !strings.Contains(err.Error(), "line 1: want a duration") {
		t.Errorf("YAML list as a duration: %v", err)
	}
	var z struct {
		Z ConfigSize `yaml:"z"`
	}
	if err := yaml.Unmarshal([]byte("z: 1.5 GiB\n"), &z); err != nil || z.Z != 3<<29 {
		t.Errorf("yaml size: %v %v", z.Z, err)
	}
	if err := yaml.Unmarshal([]byte("z: 12XB\n"), &z); err == nil || !strings.Contains(err.Error(), `line 1: bad size "12XB"`) {
		t.Errorf("bad YAML size: %v", err)
	}
}

// TestFillTimeoutSentinel: a getter that runs past its FillTimeout fails
// with ErrFillTimeout (which is an ErrFill); one that fails otherwise with
// ErrFill alone.
func TestFillTimeoutSentinel(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	slow, err := c.Register(Config{Label: "slow", FillTimeout: time.Millisecond, Getter: GetterFunc(func(ctx context.Context, _ Args) (Value, error) {
		<-ctx.Done()
		return Value{}, ctx.Err()
	})})
	if err != nil {
		t.Fatal(err)
	}
	failing, err := c.Register(Config{Label: "failing", Getter: GetterFunc(func(context.Context, Args) (Value, error) {
		return Value{}, errors.New("no")
	})})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := slow.Get(context.Background(), Args{}, Settings{}); !errors.Is(err, ErrFillTimeout) || !errors.Is(err, ErrFill) {
		t.Errorf("slow getter: %v, want ErrFillTimeout", err)
	}
	if _, _, err := failing.Get(context.Background(), Args{}, Settings{}); !errors.Is(err, ErrFill) || errors.Is(err, ErrFillTimeout) {
		t.Errorf("failing getter: %v, want ErrFill and not ErrFillTimeout", err)
	}
}
