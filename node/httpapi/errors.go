package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/persist"
	"github.com/cachenode/cachenode/worker"
)

// Error is the body of every error answer.
type Error struct {
	// Error is a sentence for a person.
	Error string `json:"error"`
	// Code is a stable word for a program: unknown_worker, unknown_model,
	// bad_request, too_many_args, args_too_large, override_not_allowed,
	// unsupported_media_type, unauthorized, body_too_large, origin_error,
	// fill_timeout, not_found, method_not_allowed, not_ready,
	// shutting_down, unavailable, records_unavailable, not_implemented,
	// internal, origin_busy (the origin's limit turned the read away; see
	// Retry-After), overloaded (the node's cap on concurrent requests).
	Code string `json:"code"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keys hold & and < often; they are not HTML
	if err := enc.Encode(v); err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "cannot encode the answer: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// setRetryAfter sets the Retry-After of an answer to err when err says when
// to come back (origin_busy), in whole seconds, rounded up.
func setRetryAfter(w http.ResponseWriter, err error) {
	var busy *worker.OriginBusyError
	if errors.As(err, &busy) {
		secs := max(int64((busy.RetryAfter+time.Second-1)/time.Second), 1)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(Error{Error: msg, Code: code})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// StatusOf maps an error of the node, the worker or the invalidation
// package to the contract's status and code. The RESP front answers with
// the same code words (-ERR origin_error ...).
func StatusOf(err error) (int, string) {
	switch {
	case errors.Is(err, worker.ErrOriginBusy):
		return http.StatusServiceUnavailable, "origin_busy"
	case errors.Is(err, worker.ErrUnknownLabel):
		return http.StatusNotFound, "unknown_worker"
	case errors.Is(err, invalidation.ErrUnknownModel):
		return http.StatusNotFound, "unknown_model"
	case errors.Is(err, worker.ErrTooManyArgs):
		return http.StatusBadRequest, "too_many_args"
	case errors.Is(err, worker.ErrArgsTooLarge):
		return http.StatusBadRequest, "args_too_large"
	case errors.Is(err, worker.ErrBadArgs), errors.Is(err, worker.ErrConfig), errors.Is(err, invalidation.ErrBadRequest):
		return http.StatusBadRequest, "bad_request"
	case errors.Is(err, worker.ErrFillTimeout):
		// A fill that ran past its deadline (the wait budget, or the
		// worker's fill timeout), here or on the owner (the peer
		// transport carries it as a code).
		return http.StatusGatewayTimeout, "fill_timeout"
	case errors.Is(err, worker.ErrFill):
		return http.StatusBadGateway, "origin_error"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "fill_timeout"
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this.
		return 499, "canceled"
	case errors.Is(err, worker.ErrClosed), errors.Is(err, node.ErrClosed), errors.Is(err, node.ErrNotStarted):
		return http.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, persist.ErrUnavailable):
		// A delayed invalidation while a storage fault keeps the outbox
		// closed: it would not be durable. Retrying later, or without
		// delay, works.
		return http.StatusServiceUnavailable, "records_unavailable"
	}
	return http.StatusInternalServerError, "internal"
}
