// Command origin is the origin of the dedicated example: the application
// that owns the Foo records. Its GET endpoints are what the cachenode
// workers fill from; its PATCH endpoint changes a record and then sends the
// change event to the cluster, as the Django model's signals did.
//
//	go run ./examples/dedicated/origin -addr 127.0.0.1:9100 -notify http://127.0.0.1:8181
//
//	GET   /foos                         every Foo          (the all_foos worker)
//	GET   /foos/filter?attr1=3&attr2=red the matching Foos (the filtered_foos worker)
//	PATCH /foos/{id}  {"attr1": 4}      change a Foo, then POST the event to -notify
//	GET   /stats                        requests served, by path and query
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Foo is a record of the origin's data.
type Foo struct {
	ID    int    `json:"id"`
	Attr1 int    `json:"attr1"`
	Attr2 string `json:"attr2"`
}

var colours = []string{"red", "green", "blue", "amber"}

// origin holds the records and counts the requests.
type origin struct {
	notify string // a node's HTTP URL: where change events go
	token  string // the cluster's admin token, "" when it has none
	client *http.Client

	mu       sync.Mutex
	foos     []Foo          // guarded by mu
	requests map[string]int // path?query → requests; guarded by mu
}

func newOrigin(n int, notify, token string) *origin {
	o := &origin{notify: strings.TrimRight(notify, "/"), token: token, requests: map[string]int{},
		client: &http.Client{Timeout: 30 * time.Second}}
	// Foo i has attr1 = i mod 10 and one colour per ten ids: Foo 3 is
	// (3, red), Foo 14 is (4, green).
	for i := 1; i <= n; i++ {
		o.foos = append(o.foos, Foo{ID: i, Attr1: i % 10, Attr2: colours[(i/10)%len(colours)]})
	}
	return o
}

func (o *origin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /foos", o.all)
	mux.HandleFunc("GET /foos/filter", o.filter)
	mux.HandleFunc("PATCH /foos/{id}", o.update)
	mux.HandleFunc("GET /stats", o.stats)
	return mux
}

func (o *origin) count(r *http.Request) {
	k := r.URL.Path
	if q := r.URL.Query().Encode(); q != "" { // Encode sorts by name
		k += "?" + q
	}
	o.requests[k]++
}

func (o *origin) all(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	o.count(r)
	foos := slices.Clone(o.foos)
	o.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"built_at": time.Now().UTC(), "foos": foos})
}

// filter answers the Foos whose attributes are among the given values; an
// attribute that is not given is not filtered on.
func (o *origin) filter(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o.mu.Lock()
	o.count(r)
	out := []Foo{}
	for _, f := range o.foos {
		if among(q["attr1"], strconv.Itoa(f.Attr1)) && among(q["attr2"], f.Attr2) {
			out = append(out, f)
		}
	}
	o.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"built_at": time.Now().UTC(), "foos": out})
}

func among(want []string, v string) bool { return len(want) == 0 || slices.Contains(want, v) }

// update changes a Foo and then tells the cluster, with the old and the
// new values, so that the rules refresh every list the Foo left or joined.
func (o *origin) update(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad id", "code": "bad_request"})
		return
	}
	var p struct {
		Attr1 *int    `json:"attr1"`
		Attr2 *string `json:"attr2"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error(), "code": "bad_request"})
		return
	}
	o.mu.Lock()
	i := slices.IndexFunc(o.foos, func(f Foo) bool { return f.ID == id })
	if i < 0 {
		o.mu.Unlock()
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such foo", "code": "not_found"})
		return
	}
	old := o.foos[i]
	nf := old
	if p.Attr1 != nil {
		nf.Attr1 = *p.Attr1
	}
	if p.Attr2 != nil {
		nf.Attr2 = *p.Attr2
	}
	o.foos[i] = nf
	o.mu.Unlock()

	// The change is made: send the event, as a post_save signal would.
	ev := map[string]any{"model": "Foo", "changes": []map[string]any{{"op": "update", "old": old, "new": nf}}}
	status, res, err := o.send(r.Context(), ev)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]any{"old": old, "new": nf, "invalidation_error": err.Error()})
		return
	}
	if status != http.StatusOK && status != http.StatusAccepted {
		writeJSON(w, http.StatusBadGateway, map[string]any{"old": old, "new": nf, "invalidation_status": status, "invalidation": res})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"old": old, "new": nf, "invalidation": res})
}

// send posts a change event to the cluster and returns its answer.
func (o *origin) send(ctx context.Context, ev any) (int, json.RawMessage, error) {
	if o.notify == "" {
		return 0, nil, errors.New("no -notify node configured")
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.notify+"/v1/invalidate", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if o.token != "" {
		req.Header.Set("Authorization", "Bearer "+o.token)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	if !json.Valid(b) {
		b, _ = json.Marshal(string(b))
	}
	return resp.StatusCode, b, nil
}

func (o *origin) stats(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"requests": o.requests})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9100", "listen `HOST:PORT`")
	notify := flag.String("notify", "http://127.0.0.1:8181", "`URL` of a cachenode node that receives the change events")
	tokenFile := flag.String("admin-token-file", "", "`FILE` with the cluster's admin token, when the nodes require one")
	n := flag.Int("foos", 200, "number of Foo records")
	flag.Parse()
	token := ""
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			log.Fatalf("origin: %v", err)
		}
		token = strings.TrimSpace(string(b))
	}
	srv := &http.Server{Addr: *addr, Handler: newOrigin(*n, *notify, token).handler(), ReadHeaderTimeout: 5 * time.Second}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	fmt.Fprintf(os.Stderr, "origin: serving %d Foos on http://%s, change events go to %s\n", *n, *addr, *notify)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("origin: %v", err)
	}
}
