package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/worker"
)

// listAnswer is the answer of the cached list endpoints.
type listAnswer struct {
	// Node is the instance that answered; Owner the node that filled the
	// list (the key's owner in the ring).
	Node  string `json:"node"`
	Owner string `json:"owner"`
	// Cache is how the node answered: hit, miss, stale or fallback.
	Cache   string    `json:"cache"`
	Key     string    `json:"key"`
	BuiltAt time.Time `json:"built_at"`
	Count   int       `json:"count"`
	Foos    []Foo     `json:"foos"`
}

// getAll answers GET /foos: the cached all_foos. ?limit=N shows only the
// first N Foos (the count is of the whole list).
func (a *App) getAll(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := takeLimit(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err)
		return
	}
	if len(q) > 0 {
		writeError(w, http.StatusBadRequest, "bad_request", errors.New("GET /foos takes no parameters but limit"))
		return
	}
	a.serveList(w, r, a.allFoos, worker.Args{}, limit)
}

// getFiltered answers GET /foos/filter?attr1=3&attr2=red: the cached
// filtered_foos. A parameter may be repeated (attr1=3&attr1=4: either
// value) or left out (that attribute is not filtered on).
func (a *App) getFiltered(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := takeLimit(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err)
		return
	}
	args := worker.Args{}
	for name, vals := range q {
		var list []any
		for _, v := range vals {
			switch name {
			case "attr1":
				i, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					writeError(w, http.StatusBadRequest, "bad_request", fmt.Errorf("attr1: %q is not an integer", v))
					return
				}
				list = append(list, i)
			case "attr2":
				list = append(list, v)
			default:
				writeError(w, http.StatusBadRequest, "bad_request", fmt.Errorf("unknown parameter %q (want attr1, attr2, limit)", name))
				return
			}
		}
		if len(list) == 1 {
			args[name] = list[0]
		} else {
			args[name] = list
		}
	}
	a.serveList(w, r, a.filtered, args, limit)
}

func takeLimit(q map[string][]string) (int, error) {
	vals, ok := q["limit"]
	if !ok {
		return -1, nil
	}
	delete(q, "limit")
	n, err := strconv.Atoi(vals[0])
	if err != nil || n < 0 || len(vals) > 1 {
		return 0, fmt.Errorf("limit: want one integer >= 0")
	}
	return n, nil
}

func (a *App) serveList(w http.ResponseWriter, r *http.Request, t *worker.Typed[[]Foo], args worker.Args, limit int) {
	foos, e, st, err := t.GetEntry(r.Context(), args, worker.Settings{})
	if err != nil {
		status, code := http.StatusInternalServerError, "internal"
		switch {
		case errors.Is(err, worker.ErrBadArgs):
			status, code = http.StatusBadRequest, "bad_request"
		case errors.Is(err, worker.ErrFill):
			status, code = http.StatusBadGateway, "fill_error"
		}
		writeError(w, status, code, err)
		return
	}
	ans := listAnswer{Node: a.cfg.Name, Owner: e.Owner, Cache: st.String(), Key: e.Key, BuiltAt: e.CreatedAt, Count: len(foos), Foos: foos}
	if limit >= 0 && limit < len(foos) {
		ans.Foos = foos[:limit]
	}
	w.Header().Set("X-Cache", st.String())
	w.Header().Set("X-Cache-Key", e.Key)
	w.Header().Set("X-Cache-Owner", e.Owner)
	w.Header().Set("X-Cache-Node", a.cfg.Name)
	writeJSON(w, http.StatusOK, ans)
}

// getOne answers GET /foos/{id} from the database (not cached).
func (a *App) getOne(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	f, err := a.db.Get(r.Context(), id)
	if err != nil {
		a.dbError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, f)
}

// changeAnswer is the answer of the endpoints that change a Foo.
type changeAnswer struct {
	Old          *Foo                 `json:"old,omitempty"`
	New          *Foo                 `json:"new,omitempty"`
	Invalidation *invalidation.Result `json:"invalidation,omitempty"`
	Error        string               `json:"error,omitempty"`
}

// create answers POST /foos {"attr1": 3, "attr2": "red", "attr3": 1.5}.
func (a *App) create(w http.ResponseWriter, r *http.Request) {
	p, err := decodePatch(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err)
		return
	}
	if p.Attr1 == nil || p.Attr2 == nil {
		writeError(w, http.StatusBadRequest, "bad_request", errors.New("attr1 and attr2 are required"))
		return
	}
	f, err := a.db.Create(r.Context(), Foo{Attr1: *p.Attr1, Attr2: *p.Attr2, Attr3: p.Attr3})
	if err != nil {
		a.dbError(w, err)
		return
	}
	a.sendChange(w, r, invalidation.Change{Op: invalidation.OpCreate, New: f.fields()}, changeAnswer{New: &f})
}

// update answers PATCH /foos/{id} with the fields to change, e.g.
// {"attr1": 4} ("attr3": null clears attr3).
func (a *App) update(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	p, err := decodePatch(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err)
		return
	}
	old, updated, err := a.db.Update(r.Context(), id, p)
	if err != nil {
		a.dbError(w, err)
		return
	}
	a.sendChange(w, r, invalidation.Change{Op: invalidation.OpUpdate, Old: old.fields(), New: updated.fields()},
		changeAnswer{Old: &old, New: &updated})
}

// delete answers DELETE /foos/{id}.
func (a *App) delete(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	old, err := a.db.Delete(r.Context(), id)
	if err != nil {
		a.dbError(w, err)
		return
	}
	a.sendChange(w, r, invalidation.Change{Op: invalidation.OpDelete, Old: old.fields()}, changeAnswer{Old: &old})
}

// sendChange tells the cluster that a Foo changed, once the change is
// committed: the post_save / post_delete signal of the Django model. The
// node resolves the event through the Foo rules and every member
// refreshes the affected lists it owns before Invalidate returns, so the
// next read anywhere sees the change.
func (a *App) sendChange(w http.ResponseWriter, r *http.Request, ch invalidation.Change, ans changeAnswer) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	res, err := a.node.Invalidate(ctx, invalidation.Request{Model: "Foo", Changes: []invalidation.Change{ch}})
	if err != nil {
		// The change is committed but the caches may still hold the old
		// lists: say so, as an exception from a signal receiver would.
		a.log.Error("change event failed", "op", ch.Op, "err", err)
		ans.Error = "the change is saved but the cache was not told: " + err.Error()
		writeJSON(w, http.StatusInternalServerError, ans)
		return
	}
	ans.Invalidation = &res
	writeJSON(w, http.StatusOK, ans)
}

// stats answers GET /stats: the database queries this instance's getters
// ran, by cache key.
func (a *App) stats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"node": a.cfg.Name, "queries": a.queries.snapshot()})
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Errorf("id: %q is not an integer", r.PathValue("id")))
		return 0, false
	}
	return id, true
}

func (a *App) dbError(w http.ResponseWriter, err error) {
	if errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, "not_found", err)
		return
	}
	a.log.Error("database", "err", err)
	writeError(w, http.StatusInternalServerError, "internal", err)
}

// decodePatch reads a JSON object of Foo fields; "attr3": null clears it.
func decodePatch(r *http.Request) (fooPatch, error) {
	var p fooPatch
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		return p, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return p, fmt.Errorf("body: want a JSON object: %v", err)
	}
	for name, v := range raw {
		var err error
		switch name {
		case "attr1":
			err = json.Unmarshal(v, &p.Attr1)
		case "attr2":
			err = json.Unmarshal(v, &p.Attr2)
		case "attr3":
			if bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
				p.ClearAttr3 = true
			} else {
				err = json.Unmarshal(v, &p.Attr3)
			}
		default:
			err = errors.New("unknown field (want attr1, attr2, attr3)")
		}
		if err != nil {
			return p, fmt.Errorf("%s: %v", name, err)
		}
	}
	return p, nil
}
