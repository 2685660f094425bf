package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachenode/cachenode/worker"
)

// Query is a parsed GET /v1/cache query: the worker's arguments, the
// per-call overrides and whether the entity form was asked for.
type Query struct {
	Args      worker.Args
	Overrides worker.Settings
	// Entity is the _entity parameter; nil when absent (the worker's
	// cached_entity decides).
	Entity *bool
}

// ParseQuery reads a raw query string. Parameters not starting with "_"
// are arguments: a parameter given once is a string, one repeated is a list
// of strings. Parameters starting with "_" are overrides: _expires, _tick,
// _tick_amount, _is_concurrent, _relevance_invalidation,
// _relevance_expires, _delay_invalidation, _delay_countdown (durations as Go
// durations or seconds, booleans as true/false/1/0), and _entity. Unknown or
// repeated overrides and malformed values are errors.
func ParseQuery(raw string) (Query, error) {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return Query{}, fmt.Errorf("malformed query: %v", err)
	}
	q := Query{Args: worker.Args{}}
	names := make([]string, 0, len(vals))
	for name := range vals {
		names = append(names, name)
	}
	slices.Sort(names) // deterministic first error
	for _, name := range names {
		vs := vals[name]
		if name == "" {
			return Query{}, fmt.Errorf("a query parameter has an empty name")
		}
		if !strings.HasPrefix(name, "_") {
			if len(vs) == 1 {
				q.Args[name] = vs[0]
			} else {
				l := make([]any, len(vs))
				for i, v := range vs {
					l[i] = v
				}
				q.Args[name] = l
			}
			continue
		}
		if len(vs) != 1 {
			return Query{}, fmt.Errorf("%s: given %d times", name, len(vs))
		}
		if err := q.setOverride(name, vs[0]); err != nil {
			return Query{}, fmt.Errorf("%s: %v", name, err)
		}
	}
	return q, nil
}

func (q *Query) setOverride(name, v string) error {
	s := &q.Overrides
	switch name {
	case "_expires":
		return parsePositiveDuration(v, &s.Expires)
	case "_tick":
		return parsePositiveDuration(v, &s.Tick)
	case "_relevance_expires":
		return parsePositiveDuration(v, &s.RelevanceExpires)
	case "_delay_countdown":
		d, err := worker.ParseDuration(v)
		if err != nil {
			return err
		}
		s.DelayCountdown = &d
	case "_tick_amount":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("want an integer >= 1, got %q", v)
		}
		s.TickAmount = &n
	case "_is_concurrent":
		return parseBool(v, &s.IsConcurrent)
	case "_relevance_invalidation":
		return parseBool(v, &s.RelevanceInvalidation)
	case "_delay_invalidation":
		return parseBool(v, &s.DelayInvalidation)
	case "_entity":
		return parseBool(v, &q.Entity)
	default:
		return fmt.Errorf("unknown override (known: _expires, _tick, _tick_amount, _is_concurrent, _relevance_invalidation, _relevance_expires, _delay_invalidation, _delay_countdown, _entity)")
	}
	return nil
}

func parseBool(v string, dst **bool) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("want true or false, got %q", v)
	}
	*dst = &b
	return nil
}

// parsePositiveDuration reads a duration override that must be above 0.
func parsePositiveDuration(v string, dst *time.Duration) error {
	d, err := worker.ParseDuration(v)
	if err != nil {
		return err
	}
	*dst = d
	if d <= 0 {
		return fmt.Errorf("must be > 0, got %q", v)
	}
	return nil
}

// CheckOverrides bounds the per-call overrides of a read from the network
// (ov, giving the policy pol) by the worker's settings: _expires at most
// the worker's MaxExpires (default: its expires), _tick × _tick_amount at
// most its wait budget, and _is_concurrent=false, _delay_invalidation and
// _delay_countdown only for the admin or a worker with OpenOverrides. The
// error names the parameter. The Go API takes any overrides: these bounds
// are for clients a node does not trust.
func CheckOverrides(wk *worker.Worker, ov worker.Settings, pol worker.Policy, admin bool) error {
	cfg, base := wk.Config(), wk.Policy()
	maxExp := cfg.MaxExpires
	if maxExp <= 0 {
		maxExp = base.Expires
	}
	if ov.Expires > maxExp {
		return fmt.Errorf("_expires: %v is over the worker's max_expires of %v", ov.Expires, maxExp)
	}
	if (ov.Tick != 0 || ov.TickAmount != nil) && pol.Budget() > base.Budget() {
		return fmt.Errorf("_tick × _tick_amount: a wait of %v is over the worker's budget of %v (tick × tick_amount)",
			pol.Budget(), base.Budget())
	}
	if admin || cfg.OpenOverrides {
		return nil
	}
	switch {
	case ov.IsConcurrent != nil && !*ov.IsConcurrent:
		return errors.New("_is_concurrent=false needs the admin token (or overrides: open on the worker)")
	case ov.DelayInvalidation != nil:
		return errors.New("_delay_invalidation needs the admin token (or overrides: open on the worker)")
	case ov.DelayCountdown != nil:
		return errors.New("_delay_countdown needs the admin token (or overrides: open on the worker)")
	}
	return nil
}

// handleCache answers GET /v1/cache/{label}.
func (s *Server) handleCache(w http.ResponseWriter, r *http.Request) {
	label := r.PathValue("label")
	wk, ok := s.node.Cache().Worker(label)
	if !ok {
		writeError(w, http.StatusNotFound, "unknown_worker", fmt.Sprintf("no worker %q", label))
		return
	}
	q, err := ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	pol, err := wk.PolicyFor(q.Overrides)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if err := CheckOverrides(wk, q.Overrides, pol, s.admin(r)); err != nil {
		writeError(w, http.StatusBadRequest, "override_not_allowed", err.Error())
		return
	}
	ctx := r.Context()
	if s.tracer != nil {
		var span trace.Span
		ctx, span = s.tracer.Start(propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(r.Header)), "cachenode.get",
			trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attribute.String("cachenode.label", label)))
		defer span.End()
	}
	ctx, cancel := context.WithTimeout(ctx, ReadTimeout(wk, pol, s.cfg.Slack))
	defer cancel()
	var ent worker.Entry // a hit is built here, without an allocation of its own
	e := &ent
	st, err := s.node.GetInto(ctx, label, q.Args, q.Overrides, e)
	if err != nil {
		if s.tracer != nil {
			span := trace.SpanFromContext(ctx)
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		s.readFailed(w, label, wk, err)
		return
	}
	if s.tracer != nil {
		span := trace.SpanFromContext(ctx)
		span.SetAttributes(attribute.String("cachenode.key", e.Key), attribute.String("cachenode.status", st.String()))
	}
	owner := e.Owner
	if st == worker.Fallback {
		// The value was computed here; the client wants to know who owns
		// the key.
		owner = s.node.Owner(e.Key)
	}
	h := w.Header()
	h.Set("X-Cache", st.String())
	h.Set("X-Cache-Key", headerSafe(e.Key))
	h.Set("X-Cache-Owner", owner)
	h.Set("X-Cache-Node", s.node.Name())
	if rv := s.node.Ring(); rv != nil {
		h.Set("X-Cache-Ring", strconv.FormatUint(rv.Version(), 10))
	}
	age := wk.Age(e)
	if age < 0 {
		age = 0
	}
	h.Set("Age", strconv.FormatInt(int64(age/time.Second), 10))
	// A value is whatever its origin sent; opened in a browser it runs in a
	// sandbox (an opaque origin, no scripts), not with the admin page's
	// origin and credentials.
	h.Set("Content-Security-Policy", "sandbox")
	entity := pol.CachedEntity
	if q.Entity != nil {
		entity = *q.Entity
	}
	if entity {
		writeJSON(w, http.StatusOK, EntityOf(e, owner, st))
		return
	}
	ct := e.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	h.Set("Content-Length", strconv.Itoa(len(e.Value)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(e.Value)
	}
}

// readFailed answers a read of label that failed with err, and logs the
// failures that are the node's or the origin's.
func (s *Server) readFailed(w http.ResponseWriter, label string, wk *worker.Worker, err error) {
	code, word := StatusOf(err)
	msg := err.Error()
	if word == "origin_error" {
		msg = FillMessage(label, err)
	}
	if word == "internal" || word == "origin_error" {
		attrs := []any{"label", label, "err", err}
		if o, ok := wk.Config().Getter.(Originer); ok {
			attrs = append(attrs, "origin", o.Origin()) // redacted by the getter
		}
		s.log.Warn("read failed", attrs...)
	}
	setRetryAfter(w, err)
	writeError(w, code, word, msg)
}

// ReadTimeout is the deadline of a read of wk under pol from the network:
// the longest a read can legitimately take (a wait that runs out, a fetch
// from the owner bounded by the same budget, then a fill here) plus slack.
// Every front (HTTP, RESP) bounds its reads with it.
func ReadTimeout(wk *worker.Worker, pol worker.Policy, slack time.Duration) time.Duration {
	fill := wk.Config().FillTimeout
	if fill <= 0 {
		fill = pol.Budget()
	}
	return 2*pol.Budget() + fill + slack
}

// FillMessage is the getter's own message inside a fill error of label
// ("origin answered 503"), without the wrapping of the worker and of the
// peer that carried it from the owner. The getters of cmd/cachenode keep
// origin URLs out of their errors; this keeps the answer short.
func FillMessage(label string, err error) string {
	s := err.Error()
	marker := worker.ErrFill.Error() + ": " + label + ": "
	if i := strings.LastIndex(s, marker); i >= 0 && i+len(marker) < len(s) {
		return s[i+len(marker):]
	}
	return s
}

// headerSafe keeps a key usable as a header value: keys are made of
// printable bytes already, but a custom KeyGen could produce anything.
func headerSafe(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return url.PathEscape(s)
		}
	}
	return s
}

// Entity is the _entity=1 form of a cached value.
type Entity struct {
	Label       string          `json:"label"`
	Key         string          `json:"key"`
	Args        worker.Args     `json:"args"`
	Owner       string          `json:"owner"`
	Status      string          `json:"status"`
	CreatedAt   time.Time       `json:"created_at"`
	RelevanceTo *time.Time      `json:"relevance_to"`
	AvailableTo time.Time       `json:"available_to"`
	ContentType string          `json:"content_type,omitempty"`
	Value       json.RawMessage `json:"value,omitempty"`
	ValueBase64 *string         `json:"value_base64,omitempty"`
}

// EntityOf is the entity form of e, served by owner with status st.
func EntityOf(e *worker.Entry, owner string, st worker.Status) Entity {
	out := Entity{Label: e.Label, Key: e.Key, Args: e.Args, Owner: owner, Status: st.String(),
		CreatedAt: e.CreatedAt, AvailableTo: e.AvailableTo, ContentType: e.ContentType}
	if !e.RelevanceTo.IsZero() {
		t := e.RelevanceTo
		out.RelevanceTo = &t
	}
	if isJSON(e.ContentType) && json.Valid(e.Value) {
		out.Value = json.RawMessage(e.Value)
	} else {
		b := base64.StdEncoding.EncodeToString(e.Value)
		out.ValueBase64 = &b
	}
	return out
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}
