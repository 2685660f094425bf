package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// report is the outcome of a run, as printed and as written with -json.
type report struct {
	Seed       uint64            `json:"seed"`
	Command    string            `json:"command"`
	Mode       string            `json:"mode"` // netns or loopback
	ModeReason string            `json:"mode_reason,omitempty"`
	Nodes      int               `json:"nodes"`
	Duration   string            `json:"duration_per_scenario"`
	Started    time.Time         `json:"started"`
	Scenarios  []*scenarioResult `json:"scenarios"`
	Skipped    []skipped         `json:"skipped,omitempty"`
	// Known lists the known issues (see knownIssues) that explain some of
	// the violations of this run.
	Known []knownIssue `json:"known_issues,omitempty"`
	// OK: every invariant held in every scenario. Explained: every
	// violation carries the evidence of a known issue.
	OK        bool `json:"ok"`
	Explained bool `json:"explained"`
}

type skipped struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// scenarioResult is one scenario's figures and verdicts.
type scenarioResult struct {
	Name     string    `json:"name"`
	Desc     string    `json:"description"`
	Seed     uint64    `json:"seed"`
	Start    time.Time `json:"start"` // the workload's start: every *_s time counts from it
	Duration float64   `json:"duration_s"`
	Nodes    []string  `json:"nodes"`

	Faults     []faultRow `json:"faults"`
	FaultCount int        `json:"faults_injected"`

	// Invariant 3: availability.
	Reads               int            `json:"reads"`
	ReadsToFailedNode   int            `json:"reads_to_failed_node"` // sent to a node the harness killed, stopped or made leave during the read: not counted
	Errors              int            `json:"errors"`
	Availability        float64        `json:"availability_pct"`
	ReadsOutside        int            `json:"reads_outside_windows"`
	ErrorsOutside       int            `json:"errors_outside_windows"`
	AvailabilityOutside float64        `json:"availability_outside_windows_pct"`
	ErrorKinds          map[string]int `json:"error_kinds"`
	ErrorSamples        []string       `json:"error_samples_outside,omitempty"`

	// Invariant 1: fills.
	Fills           int         `json:"fills"`
	FallbackFills   int         `json:"fallback_fills"`
	AllowedFills    int         `json:"allowed_fills"`
	FillsOverLimit  []fillCheck `json:"fills_over_limit,omitempty"`
	FallbackOutside int         `json:"fallback_fills_outside_windows"`

	// Invariant 2: staleness.
	StaleCount  int          `json:"stale_reads"`
	StaleReads  []staleRead  `json:"stale_samples,omitempty"`
	CutOffStale int          `json:"cut_off_reads_of_invalidated_values"` // during a partition, on its minority side: allowed
	FinalStale  []finalStale `json:"final_stale,omitempty"`
	WrongValues int          `json:"wrong_values"`

	Invalidations struct {
		Sync        int     `json:"sync"`
		Delayed     int     `json:"delayed"`
		Attempts    int     `json:"posts"`
		NotAccepted int     `json:"not_accepted"`
		P50         float64 `json:"sync_p50_s"`
		P99         float64 `json:"sync_p99_s"`
		Max         float64 `json:"sync_max_s"`
	} `json:"invalidations"`

	// Invariant 4: records.
	Records []recordCheck `json:"record_checks"`

	// Invariant 5: logs and exits.
	Panics    []string `json:"panics,omitempty"`
	BadExits  []string `json:"bad_exits,omitempty"`
	LogErrors int      `json:"log_error_lines"`

	// Changes are the writer's changes and their invalidations.
	Changes []changeRow `json:"changes"`

	Harness    []string    `json:"harness_errors,omitempty"`
	Violations []violation `json:"violations"`
	// Verdict is ok (every invariant held), known (every violation is
	// explained by a known issue) or fail.
	Verdict string   `json:"verdict"`
	LogDirs []string `json:"log_dirs,omitempty"`
}

type changeRow struct {
	At       float64        `json:"at_s"`
	Kind     string         `json:"kind"`
	Versions map[string]int `json:"versions"`
	Acked    float64        `json:"acked_s,omitempty"` // since the change; 0 when never
	Posts    int            `json:"posts"`
	Via      string         `json:"via"`
	LastErr  string         `json:"last_error,omitempty"`
}

type faultRow struct {
	At        float64 `json:"at_s"`
	Step      string  `json:"step"`
	Targets   string  `json:"targets"`
	Converge  float64 `json:"converge_s"`
	Converged bool    `json:"converged"`
	Note      string  `json:"note,omitempty"`
}

func (r *scenarioResult) finish() *scenarioResult {
	if r.Violations == nil {
		r.Violations = []violation{}
	}
	r.Verdict = "ok"
	for _, v := range r.Violations {
		if v.Known == "" {
			r.Verdict = "fail"
			break
		}
		r.Verdict = "known"
	}
	if len(r.Harness) > 0 {
		r.Verdict = "fail"
	}
	return r
}

// knownIDs returns the known issues behind a scenario's violations.
func (r *scenarioResult) knownIDs() []string {
	var ids []string
	for _, v := range r.Violations {
		if v.Known != "" && !slices.Contains(ids, v.Known) {
			ids = append(ids, v.Known)
		}
	}
	slices.Sort(ids)
	return ids
}

// conclude sets the run's verdicts and the known issues it saw.
func (rep *report) conclude() {
	rep.OK, rep.Explained = true, true
	seen := map[string]bool{}
	for _, s := range rep.Scenarios {
		rep.OK = rep.OK && s.Verdict == "ok"
		rep.Explained = rep.Explained && s.Verdict != "fail"
		for _, id := range s.knownIDs() {
			seen[id] = true
		}
	}
	rep.Known = nil
	for _, k := range knownIssues {
		if seen[k.ID] {
			rep.Known = append(rep.Known, k)
		}
	}
}

// writeText prints the summary table, then each scenario's faults and
// violations.
func (rep *report) writeText(w io.Writer) {
	fmt.Fprintf(w, "chaos: seed %d, %d nodes, %s per scenario, %s", rep.Seed, rep.Nodes, rep.Duration, rep.Mode)
	if rep.ModeReason != "" {
		fmt.Fprintf(w, " (%s)", rep.ModeReason)
	}
	fmt.Fprintf(w, "\nreplay: %s\n\n", rep.Command)
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tfaults\treads\terrors\tavail %\tavail % outside\tfills / allowed\tfallback\tstale\tconverge max\trecords\tresult\t")
	for _, s := range rep.Scenarios {
		conv := 0.0
		for _, f := range s.Faults {
			if f.Converged && f.Converge > conv {
				conv = f.Converge
			}
		}
		recs, lost := 0, 0
		for _, rc := range s.Records {
			recs += rc.Acked
			lost += len(rc.Missing)
		}
		result := "ok"
		switch s.Verdict {
		case "known":
			result = "KNOWN FAILURE (" + strings.Join(s.knownIDs(), ",") + ")"
		case "fail":
			result = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.2f\t%.2f\t%d / %d\t%d\t%d\t%.2fs\t%d/%d\t%s\t\n",
			s.Name, s.FaultCount, s.Reads, s.Errors, s.Availability, s.AvailabilityOutside,
			s.Fills-s.FallbackFills, s.AllowedFills, s.FallbackFills, s.StaleCount, conv, recs-lost, recs, result)
	}
	for _, sk := range rep.Skipped {
		fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\tskipped\t\n", sk.Name)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nfills: origin fills of one key version, without fallbacks; allowed: per version 1, +1 per extra invalidation sent, +1 per ring change that moved the key")
	fmt.Fprintln(w, "avail % outside: reads that overlap no failure-detection window (a fault step until the cluster converged)")
	fmt.Fprintln(w, "records: acknowledged records found after kill -9 and restart (or once a full disk was freed) / acknowledged before")
	for _, sk := range rep.Skipped {
		fmt.Fprintf(w, "\n%s: skipped: %s\n", sk.Name, sk.Reason)
	}
	for _, s := range rep.Scenarios {
		fmt.Fprintf(w, "\n%s — %s\n", s.Name, s.Desc)
		var steps []string
		for _, f := range s.Faults {
			c := fmt.Sprintf("%.2fs", f.Converge)
			if f.Converged && f.Note != "" {
				c += " (" + f.Note + ")" // disk-full: what the records did
			}
			if !f.Converged {
				c = "—"
				if f.Note != "" {
					c = "— (" + f.Note + ")"
				}
			}
			steps = append(steps, fmt.Sprintf("  %6.1fs  %-9s %-8s converged %s", f.At, f.Step, f.Targets, c))
		}
		if len(steps) > 0 {
			fmt.Fprintln(w, strings.Join(steps, "\n"))
		}
		inv := s.Invalidations
		fmt.Fprintf(w, "  invalidations: %d sync (p50 %.3fs, p99 %.3fs, max %.3fs), %d delayed, %d POSTs, %d not accepted\n",
			inv.Sync, inv.P50, inv.P99, inv.Max, inv.Delayed, inv.Attempts, inv.NotAccepted)
		fmt.Fprintf(w, "  reads to a node the harness had just failed (not counted): %d; cut-off reads of invalidated values during a partition (allowed): %d\n",
			s.ReadsToFailedNode, s.CutOffStale)
		if len(s.ErrorKinds) > 0 {
			var kinds []string
			for k, n := range s.ErrorKinds {
				kinds = append(kinds, fmt.Sprintf("%s ×%d", k, n))
			}
			sort.Strings(kinds)
			fmt.Fprintf(w, "  read errors: %s\n", strings.Join(kinds, ", "))
		}
		for _, h := range s.Harness {
			fmt.Fprintf(w, "  HARNESS ERROR: %s\n", h)
		}
		for _, v := range s.Violations {
			tag := "VIOLATION"
			if v.Known != "" {
				tag = "VIOLATION (known issue " + v.Known + ")"
			}
			fmt.Fprintf(w, "  %s: %s: %s\n", tag, v.Invariant, v.Text)
		}
		if len(s.Violations) == 0 && len(s.Harness) == 0 {
			fmt.Fprintln(w, "  all invariants held")
		} else if len(s.LogDirs) > 0 {
			fmt.Fprintf(w, "  node logs: %s\n", strings.Join(s.LogDirs, " "))
		}
	}
}

// writeVerdict prints the known issues seen and the run's verdict.
func (rep *report) writeVerdict(w io.Writer) {
	if len(rep.Known) > 0 {
		fmt.Fprintln(w, "\nknown issues (violations the harness recognizes; open in other components):")
		for _, k := range rep.Known {
			fmt.Fprintf(w, "  %s  %s\n      component: %s\n      recognized by: %s\n", k.ID, k.Title, k.Component, k.Evidence)
		}
	}
	switch {
	case rep.OK:
		fmt.Fprintln(w, "\nverdict: every invariant held in every scenario")
	case rep.Explained:
		fmt.Fprintln(w, "\nverdict: INVARIANTS VIOLATED; every violation is explained by a known issue above")
	default:
		fmt.Fprintln(w, "\nverdict: INVARIANTS VIOLATED, some without a known explanation (FAIL)")
	}
}

func (rep *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
