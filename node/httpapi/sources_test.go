package httpapi

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestSources: a server given sources reports them in /admin/sources
// (guarded by the token), on the admin page and in /metrics; one without
// has no such endpoint.
func TestSources(t *testing.T) {
	ms := startCluster(t, 1, "tok", newFooDB())
	m := ms[0]
	if a := call(t, "GET", m.url+"/admin/sources", "tok", ""); a.code != 404 {
		t.Errorf("/admin/sources without sources: %d", a.code)
	}
	st := SourceStatus{Name: "main", State: "streaming", Consuming: true, Consumer: "n1", Slot: "cachenode",
		Publication: "cachenode", LastAppliedLSN: "0/16B3748", LastAppliedPosition: 0x16B3748, LagBytes: 4096, LagSeconds: 0.25,
		Transactions: 7, Changes: 2012, Warnings: []string{"table public.foo has REPLICA IDENTITY DEFAULT"}}
	m.api.SetSources(func() []SourceStatus { return []SourceStatus{st} })

	if a := call(t, "GET", m.url+"/admin/sources", "", ""); a.code != 401 {
		t.Errorf("/admin/sources without the token: %d", a.code)
	}
	a := call(t, "GET", m.url+"/admin/sources", "tok", "")
	var got struct {
		Self    string         `json:"self"`
		Sources []SourceStatus `json:"sources"`
	}
	if a.code != 200 || json.Unmarshal(a.body, &got) != nil || got.Self != "n1" || len(got.Sources) != 1 ||
		got.Sources[0].LastAppliedLSN != "0/16B3748" || got.Sources[0].LagBytes != 4096 || got.Sources[0].Consumer != "n1" {
		t.Errorf("/admin/sources: %d %s", a.code, a.body)
	}
	metrics := string(call(t, "GET", m.url+"/metrics", "", "").body)
	for _, want := range []string{
		`cachenode_source_state{source="main",state="streaming"} 1`,
		`cachenode_source_consuming{source="main"} 1`,
		`cachenode_source_lag_bytes{source="main"} 4096`,
		`cachenode_source_lag_seconds{source="main"} 0.25`,
		`cachenode_source_last_applied_lsn{source="main"} 2.380372e+07`,
		`cachenode_source_transactions_total{source="main"} 7`,
		`cachenode_source_changes_total{source="main"} 2012`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	page := string(call(t, "GET", m.url+"/admin/", "tok", "").body)
	for _, want := range []string{`id="sources"`, "0/16B3748", "4.0 KiB, 0.25 s", "REPLICA IDENTITY DEFAULT", "streaming"} {
		if !strings.Contains(page, want) {
			t.Errorf("the admin page lacks %q", want)
		}
	}
}
