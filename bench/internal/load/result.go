package load

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what one run (or the merge of several) measured.
type Result struct {
	// Scenario names what was measured, e.g. "remote-hit".
	Scenario string `json:"scenario"`
	// System is the system under test: "cachenode", "olric", "groupcache".
	System string `json:"system"`
	// Nodes is the size of the cluster.
	Nodes int `json:"nodes,omitempty"`
	// Callers is the number of concurrent callers.
	Callers int `json:"callers,omitempty"`
	// Ops counts the successful operations measured; Errors the failed ones.
	Ops    int64 `json:"ops"`
	Errors int64 `json:"errors"`
	// Seconds is the measured wall time; OpsPerSec is Ops / Seconds.
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	// Latency holds the percentiles of the operations' latencies.
	Latency Percentiles `json:"latency"`
	// Keys and Fills: how many distinct keys were asked and how many times
	// a getter (loader) ran for them.
	Keys  int64 `json:"keys,omitempty"`
	Fills int64 `json:"fills"`
	// Figures holds scenario-specific measures (name → value), in the unit
	// their name says.
	Figures map[string]float64 `json:"figures,omitempty"`
	// Notes are remarks a reader needs to interpret the figures.
	Notes []string `json:"notes,omitempty"`
	// Hist is the latency distribution in nanoseconds.
	Hist *hdrhistogram.Histogram `json:"-"`
}

// Percentiles of a latency distribution, in microseconds.
type Percentiles struct {
	P50  float64 `json:"p50_us"`
	P90  float64 `json:"p90_us"`
	P99  float64 `json:"p99_us"`
	P999 float64 `json:"p99_9_us"`
	Max  float64 `json:"max_us"`
	Mean float64 `json:"mean_us"`
}

// PercentilesOf reads the percentiles of a histogram in nanoseconds.
func PercentilesOf(h *hdrhistogram.Histogram) Percentiles {
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	return Percentiles{
		P50:  us(h.ValueAtQuantile(50)),
		P90:  us(h.ValueAtQuantile(90)),
		P99:  us(h.ValueAtQuantile(99)),
		P999: us(h.ValueAtQuantile(99.9)),
		Max:  us(h.Max()),
		Mean: h.Mean() / 1e3,
	}
}

// setOps sets the counts and rates from ops done in elapsed.
func (r *Result) setOps(ops int64, elapsed time.Duration) {
	r.Ops = ops
	r.Seconds = elapsed.Seconds()
	if r.Seconds > 0 {
		r.OpsPerSec = float64(ops) / r.Seconds
	}
	if r.Hist != nil {
		r.Latency = PercentilesOf(r.Hist)
	}
}

// NewResult returns a result of ops operations done in elapsed, with the
// latencies of h.
func NewResult(h *hdrhistogram.Histogram, ops int64, elapsed time.Duration) *Result {
	r := &Result{Hist: h}
	r.setOps(ops, elapsed)
	return r
}

// Merge returns the sum of several runs of one scenario: operations, errors,
// fills and time add up, and the histograms are merged. Figures are not
// merged.
func Merge(rs ...*Result) *Result {
	if len(rs) == 0 {
		return &Result{Hist: NewHistogram()}
	}
	m := &Result{Scenario: rs[0].Scenario, System: rs[0].System, Nodes: rs[0].Nodes, Callers: rs[0].Callers, Hist: NewHistogram()}
	var secs float64
	for _, r := range rs {
		m.Errors += r.Errors
		m.Fills += r.Fills
		m.Keys += r.Keys
		m.Ops += r.Ops
		secs += r.Seconds
		if r.Hist != nil {
			m.Hist.Merge(r.Hist)
		}
	}
	m.setOps(m.Ops, time.Duration(secs*float64(time.Second)))
	return m
}

// Figure sets a scenario-specific figure and returns r.
func (r *Result) Figure(name string, v float64) *Result {
	if r.Figures == nil {
		r.Figures = make(map[string]float64)
	}
	r.Figures[name] = v
	return r
}

// Note adds a remark and returns r.
func (r *Result) Note(format string, args ...any) *Result {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
	return r
}

// FormatMicros prints a latency given in microseconds with a unit that
// suits its size.
func FormatMicros(us float64) string {
	switch {
	case us == 0:
		return "0"
	case us < 1:
		return fmt.Sprintf("%.0f ns", us*1e3)
	case us < 100:
		return fmt.Sprintf("%.1f µs", us)
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	case us < 100e3:
		return fmt.Sprintf("%.2f ms", us/1e3)
	case us < 1e6:
		return fmt.Sprintf("%.0f ms", us/1e3)
	}
	return fmt.Sprintf("%.2f s", us/1e6)
}

// FormatRate prints an operations-per-second figure.
func FormatRate(r float64) string {
	switch {
	case r >= 1e6:
		return fmt.Sprintf("%.2fM", r/1e6)
	case r >= 1e4:
		return fmt.Sprintf("%.1fk", r/1e3)
	case r >= 100:
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.1f", r)
}

// WriteTable writes results as a Markdown table.
func WriteTable(w io.Writer, rs []*Result) error {
	var b strings.Builder
	b.WriteString("| scenario | system | nodes | callers | ops | ops/s | p50 | p99 | p99.9 | max | errors | keys | fills |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		keys := ""
		if r.Keys > 0 {
			keys = fmt.Sprint(r.Keys)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %s | %s | %s | %s | %s | %d | %s | %d |\n",
			r.Scenario, r.System, r.Nodes, r.Callers, r.Ops, FormatRate(r.OpsPerSec),
			FormatMicros(r.Latency.P50), FormatMicros(r.Latency.P99), FormatMicros(r.Latency.P999),
			FormatMicros(r.Latency.Max), r.Errors, keys, r.Fills)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes v as indented JSON to path.
func WriteJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// Ratio returns a / b, or NaN when b is 0.
func Ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}
