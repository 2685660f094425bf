package invalidation

import (
	"errors"
	"strings"
	"testing"

	"github.com/cachenode/cachenode/worker"
)

// TestMatchesTheOriginalRule checks the matching semantics against the
// original library's rule: an entry is affected if, for every attribute of
// the event, its argument contains the value or it does not constrain the
// attribute.
func TestMatchesTheOriginalRule(t *testing.T) {
	cases := []struct {
		name  string
		args  worker.Args
		event map[string][]any
		want  bool
	}{
		{"same values", worker.Args{"attr1": 1, "attr2": "x"}, map[string][]any{"attr1": {1}, "attr2": {"x"}}, true},
		{"one attribute differs", worker.Args{"attr1": 1, "attr2": "x"}, map[string][]any{"attr1": {1}, "attr2": {"y"}}, false},
		{"entry does not constrain attr2", worker.Args{"attr1": 1}, map[string][]any{"attr1": {1}, "attr2": {"y"}}, true},
		{"entry constrains nothing", worker.Args{}, map[string][]any{"attr1": {1}}, true},
		{"event has fewer attributes", worker.Args{"attr1": 1, "attr2": "x"}, map[string][]any{"attr2": {"x"}}, true},
		{"list argument contains the value", worker.Args{"ids": []int{1, 2, 3}}, map[string][]any{"ids": {2}}, true},
		{"list argument lacks the value", worker.Args{"ids": []int{1, 2, 3}}, map[string][]any{"ids": {4}}, false},
		{"event lists several values, one matches", worker.Args{"attr1": 5}, map[string][]any{"attr1": {4, 5}}, true},
		{"empty list constrains to nothing", worker.Args{"ids": []int{}}, map[string][]any{"ids": {1}}, false},
		{"number from JSON matches an int", worker.Args{"attr1": 1}, map[string][]any{"attr1": {1.0}}, true},
		{"query string matches a number", worker.Args{"attr1": "1"}, map[string][]any{"attr1": {1.0}}, true},
		{"bool matches", worker.Args{"on": true}, map[string][]any{"on": {true}}, true},
		{"nil matches null", worker.Args{"v": nil}, map[string][]any{"v": {nil}}, true},
		{"0 is a value, not absence", worker.Args{"attr1": 0}, map[string][]any{"attr1": {1}}, false},
		{"empty event matches all", worker.Args{"attr1": 0}, map[string][]any{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mv, err := worker.MatchValues(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			tg, err := matchTarget("w", tc.event)
			if err != nil {
				t.Fatal(err)
			}
			if got := Matches(mv, tg.Match); got != tc.want {
				t.Fatalf("Matches(%v, %v) = %v, want %v", tc.args, tc.event, got, tc.want)
			}
		})
	}
}

func known(string) bool { return true }

func TestResolveUpdateAffectsBothBuckets(t *testing.T) {
	rules := NewRules()
	if err := rules.Add("Foo", map[string]Rule{
		"all_foos":      {IsEmpty: true},
		"filtered_foos": {Args: []string{"attr1", "attr2"}},
	}, known); err != nil {
		t.Fatal(err)
	}
	req := &Request{Model: "Foo", Changes: []Change{{Op: OpUpdate,
		Old: map[string]any{"id": 7, "attr1": 1, "attr2": "a"},
		New: map[string]any{"id": 7, "attr1": 2, "attr2": "a"}}}}
	ts, err := Resolve(req, rules, known)
	if err != nil {
		t.Fatal(err)
	}
	var sigs []string
	for _, tg := range ts {
		sigs = append(sigs, tg.signature())
	}
	want := []string{"all_foos2", `filtered_foos3"attr1"=["1"];"attr2"=["a"];`, `filtered_foos3"attr1"=["2"];"attr2"=["a"];`}
	if strings.Join(sigs, "|") != strings.Join(want, "|") {
		t.Fatalf("targets\n%v\nwant\n%v", sigs, want)
	}
}

func TestResolveArgsListField(t *testing.T) {
	rules := NewRules()
	if err := rules.Add("Foo", map[string]Rule{"filtered_foos": {Args: []string{"attr1", "attr2"}}}, known); err != nil {
		t.Fatal(err)
	}
	ts, err := Resolve(&Request{Model: "Foo", Changes: []Change{{Op: OpCreate,
		New: map[string]any{"attr1": []any{"1", "1.0"}, "attr2": []any{}}}}}, rules, known)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].Kind != KindMatch {
		t.Fatalf("targets %+v", ts)
	}
	if got := ts[0].Match; len(got) != 1 || strings.Join(got["attr1"], ",") != "1,1.0" {
		t.Fatalf("a list field must match any of its values, an empty one nothing: %v", got)
	}
	for _, c := range []struct {
		args worker.Args
		want bool
	}{{worker.Args{"attr1": "1"}, true}, {worker.Args{"attr1": "1.0", "attr2": "x"}, true}, {worker.Args{"attr1": "2"}, false}} {
		mv, _ := worker.MatchValues(c.args)
		if Matches(mv, ts[0].Match) != c.want {
			t.Errorf("%v matches %v: want %v", c.args, ts[0].Match, c.want)
		}
	}
}

func TestResolveGetters(t *testing.T) {
	rules := NewRules()
	rules.Add("Foo", map[string]Rule{
		"by_owner": {
			Instance:  func(r map[string]any) Match { return Match{"owner": {r["owner"]}} },
			Outdated:  func(o, n map[string]any) Match { return Match{"owner": {o["owner"]}} },
			Newcomers: func(o, n map[string]any) Match { return nil }, // nothing: the whole label
		},
	}, known)
	ts, err := Resolve(&Request{Model: "Foo", Changes: []Change{{Op: OpUpdate, Old: map[string]any{"owner": "a"}, New: map[string]any{"owner": "b"}}}}, rules, known)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].Kind != KindAll {
		t.Fatalf("a getter returning nothing must mean the whole label, got %+v", ts)
	}
	ts, _ = Resolve(&Request{Model: "Foo", Changes: []Change{{Op: OpDelete, Old: map[string]any{"owner": "a"}}}}, rules, known)
	if len(ts) != 1 || ts[0].Kind != KindMatch || ts[0].Match["owner"][0] != "a" {
		t.Fatalf("delete uses the instance getter on the old values: %+v", ts)
	}
}

func TestResolveBulkIsDeduplicated(t *testing.T) {
	rules := NewRules()
	rules.Add("Foo", map[string]Rule{"filtered_foos": {Args: []string{"attr1"}}}, known)
	var changes []Change
	for i := range 1000 {
		changes = append(changes, Change{Op: OpCreate, New: map[string]any{"id": i, "attr1": i % 10}})
	}
	ts, err := Resolve(&Request{Model: "Foo", Changes: changes}, rules, known)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 10 {
		t.Fatalf("1000 creates over 10 buckets gave %d targets", len(ts))
	}
}

func TestRequestValidation(t *testing.T) {
	bad := []Request{
		{},
		{Label: "a", Model: "M"},
		{Model: "M"},
		{Model: "M", Changes: []Change{{Op: "upsert"}}},
		{Model: "M", Changes: []Change{{Op: OpUpdate, New: map[string]any{}}}},
		{Label: "a", Args: worker.Args{}, Match: map[string][]any{"x": {1}}},
		{Label: "a", Match: map[string][]any{"x": {}}},
		{Label: "a b"},
		{Label: "a", Args: worker.Args{"x": struct{}{}}},
	}
	for _, r := range bad {
		if err := r.Validate(); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%+v: %v", r, err)
		}
	}
	if _, err := Resolve(&Request{Label: "nope"}, NewRules(), func(string) bool { return false }); !errors.Is(err, ErrUnknownLabel) {
		t.Errorf("unknown label: %v", err)
	}
	if _, err := Resolve(&Request{Model: "Nope", Changes: []Change{{Op: OpCreate, New: map[string]any{}}}}, NewRules(), known); !errors.Is(err, ErrUnknownModel) {
		t.Errorf("unknown model: %v", err)
	}
}

func TestDurationJSON(t *testing.T) {
	var r Request
	for in, want := range map[string]string{`{"label":"a","countdown":"1.5s"}`: "1.5s", `{"label":"a","countdown":2}`: "2s",
		`{"label":"a","countdown":"2.5"}`: "2.5s", `{"label":"a","countdown":0.25}`: "250ms"} {
		if err := jsonUnmarshal(in, &r); err != nil {
			t.Fatal(err)
		}
		if got := timeDuration(r.Countdown).String(); got != want {
			t.Errorf("%s: %s", in, got)
		}
	}
	for _, in := range []string{`"soon"`, `-1`, `"-2s"`, `1e12`, `true`} {
		if err := jsonUnmarshal(`{"label":"a","countdown":`+in+`}`, &r); err == nil {
			t.Errorf("countdown %s accepted", in)
		}
	}
}
