package peer

import (
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

var (
	// ErrClosed is returned by the methods of a closed Client or Server, and
	// by the calls that were in flight when the Client was closed.
	ErrClosed = errors.New("peer: closed")

	// ErrFrameTooLarge is returned by Client.Call for a request larger than
	// the client's or the server's maximum frame size (nothing is sent), and
	// matches a response the server could not send because it was larger
	// than the client's maximum.
	ErrFrameTooLarge = errors.New("peer: frame too large")

	// ErrConnLost is returned by Client.Call when the connection carrying the
	// call broke before the response arrived: the request may or may not
	// have been handled.
	ErrConnLost = errors.New("peer: connection lost")

	// ErrAuth is returned by Client.Call when the connection handshake failed
	// because the two sides do not share the same key (or one has none).
	ErrAuth = errors.New("peer: authentication failed")

	// ErrProtocol marks a peer that broke the wire protocol: a malformed
	// hello or frame. The connection is closed.
	ErrProtocol = errors.New("peer: protocol error")
)

// Error codes that this package itself puts in a RemoteError.
const (
	// CodeInternal is the code of a handler error that is not a
	// *RemoteError, and of a handler panic.
	CodeInternal = "internal"
	// CodeFrameTooLarge is the code of a response that the server did not
	// send because it was larger than the client's maximum frame size.
	CodeFrameTooLarge = "frame_too_large"
)

// RemoteError is an error returned by the remote handler, carried back to
// the caller of Client.Call. A handler that returns a *RemoteError (or an
// error wrapping one) keeps its Code; any other handler error arrives with
// Code "internal" and the error's text as Message.
type RemoteError struct {
	Code    string `msgpack:"code"`
	Message string `msgpack:"message"`
	// Detail refines Code for the members that know it (a fill error that
	// is a timeout); older members ignore the field, so a new detail
	// needs no new protocol version.
	Detail string `msgpack:"detail,omitempty"`
}

// Error implements error.
func (e *RemoteError) Error() string {
	if e.Message == "" {
		return "peer: remote error " + e.Code
	}
	return "peer: remote error " + e.Code + ": " + e.Message
}

// Is reports whether target is a *RemoteError with the same Code (so that
// errors.Is(err, &RemoteError{Code: "not_found"}) tests for a code), or
// ErrFrameTooLarge for the code "frame_too_large".
func (e *RemoteError) Is(target error) bool {
	if t, ok := target.(*RemoteError); ok {
		return t.Code == e.Code
	}
	return target == ErrFrameTooLarge && e.Code == CodeFrameTooLarge
}

// encodeRemoteError turns a handler error into the payload of an error
// response.
func encodeRemoteError(err error) []byte {
	var re *RemoteError
	body := RemoteError{Code: CodeInternal, Message: err.Error()}
	if errors.As(err, &re) {
		body = *re
	}
	b, merr := msgpack.Marshal(&body)
	if merr != nil {
		// Two strings always marshal; keep a valid payload regardless.
		b, _ = msgpack.Marshal(&RemoteError{Code: CodeInternal})
	}
	return b
}

// decodeRemoteError decodes the payload of an error response.
func decodeRemoteError(b []byte) error {
	var re RemoteError
	if err := msgpack.Unmarshal(b, &re); err != nil || re.Code == "" {
		return fmt.Errorf("%w: undecodable error response", ErrProtocol)
	}
	return &re
}
