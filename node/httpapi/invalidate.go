package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cachenode/cachenode/invalidation"
)

// handleInvalidate answers POST /v1/invalidate: 200 {"keys", "nodes"} once
// every live member applied the invalidation, 202 {"queued": ID} when it
// was delayed, 504 invalidation_incomplete (with keys, nodes and missing)
// when some live member did not acknowledge it in time.
func (s *Server) handleInvalidate(w http.ResponseWriter, r *http.Request) {
	if s.inv == nil {
		writeError(w, http.StatusNotImplemented, "not_implemented", "this node cannot apply invalidations")
		return
	}
	// Only JSON: a cross-site HTML form can post text/plain,
	// application/x-www-form-urlencoded and multipart bodies without a
	// preflight, with the Basic credentials a browser holds for the admin
	// page; it cannot post application/json.
	if !isJSONBody(r.Header.Get("Content-Type")) {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type",
			"the body must be sent with Content-Type: application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large",
				fmt.Sprintf("the body is over %d bytes", s.cfg.MaxBody))
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", "cannot read the body: "+err.Error())
		return
	}
	req, err := DecodeInvalidation(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	res, err := s.inv.Invalidate(r.Context(), req)
	s.metrics.recordInvalidation(req, res, err)
	if err != nil {
		code, word := StatusOf(err)
		if word == "internal" {
			s.log.Warn("invalidation failed", "err", err)
		}
		writeError(w, code, word, err.Error())
		return
	}
	switch {
	case res.Queued != 0:
		writeJSON(w, http.StatusAccepted, map[string]any{"queued": res.Queued})
	case len(res.Missing) > 0:
		writeJSON(w, http.StatusGatewayTimeout, map[string]any{
			"error": fmt.Sprintf("%s did not acknowledge in time; delivery goes on in the background",
				strings.Join(res.Missing, ", ")),
			"code": "invalidation_incomplete", "keys": res.Keys, "nodes": res.Nodes, "missing": res.Missing,
		})
	default:
		writeJSON(w, http.StatusOK, map[string]any{"keys": res.Keys, "nodes": res.Nodes})
	}
}

// isJSONBody reports whether a request's Content-Type is application/json,
// with any parameters (charset=utf-8).
func isJSONBody(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// DecodeInvalidation reads the JSON body of POST /v1/invalidate strictly:
// unknown fields, trailing data and shapes that Request.Validate refuses
// are errors. Numbers decode as float64: invalidation matching is loose
// about types (1, 1.0 and "1" match alike).
func DecodeInvalidation(body []byte) (invalidation.Request, error) {
	var req invalidation.Request
	if len(bytes.TrimSpace(body)) == 0 {
		return req, errors.New("the body is empty; want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("malformed JSON body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, errors.New("malformed JSON body: data after the object")
	}
	if req.Args != nil {
		// Keys read over HTTP are made of query parameters, which are text:
		// {"attr1": 7} names the key that ?attr1=7 filled.
		args := make(map[string]any, len(req.Args))
		for name, v := range req.Args {
			t, err := queryForm(v)
			if err != nil {
				return req, fmt.Errorf("%w: args.%s: %v", invalidation.ErrBadRequest, name, err)
			}
			args[name] = t
		}
		req.Args = args
	}
	if err := req.Validate(); err != nil {
		return req, err
	}
	return req, nil
}

// queryForm returns a JSON argument value as ParseQuery would have read it
// from a query string: text, and lists of text for repeated parameters.
func queryForm(v any) (any, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case bool:
		return strconv.FormatBool(x), nil
	case nil:
		return "", nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			if _, nested := e.([]any); nested {
				return nil, errors.New("lists cannot nest in a query")
			}
			t, err := queryForm(e)
			if err != nil {
				return nil, err
			}
			out[i] = t
		}
		if len(out) == 1 {
			return out[0], nil // one repeated parameter is a plain value
		}
		return out, nil
	}
	return nil, fmt.Errorf("%T cannot be a query parameter", v)
}

// recentInvalidation is one line of the admin page's list.
type recentInvalidation struct {
	At     time.Time
	What   string
	Result string
	Err    string
}

func describeRequest(req invalidation.Request) string {
	var b strings.Builder
	switch {
	case req.Model != "":
		fmt.Fprintf(&b, "model %s, %d change(s)", req.Model, len(req.Changes))
		for i, c := range req.Changes {
			if i == 3 {
				b.WriteString(", …")
				break
			}
			fmt.Fprintf(&b, "; %s", c.Op)
		}
	case req.Args != nil:
		js, _ := json.Marshal(req.Args)
		fmt.Fprintf(&b, "%s %s", req.Label, js)
	case req.Match != nil:
		js, _ := json.Marshal(req.Match)
		fmt.Fprintf(&b, "%s matching %s", req.Label, js)
	default:
		fmt.Fprintf(&b, "%s (every key)", req.Label)
	}
	if req.Delay != nil && *req.Delay {
		b.WriteString(", delayed")
	}
	return b.String()
}
