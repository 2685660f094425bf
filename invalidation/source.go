package invalidation

import "time"

// SourceStatus is what a change source (a database whose committed changes
// become change events, as invalidation/pgsource) reports of itself: the
// admin API and page show it, /metrics exports it.
type SourceStatus struct {
	Name        string `json:"name"`
	State       string `json:"state"`
	Consuming   bool   `json:"consuming"`
	Consumer    string `json:"consumer"`
	Slot        string `json:"slot"`
	Publication string `json:"publication"`
	// LastAppliedLSN is the commit position of the last transaction
	// applied by every member; ConfirmedLSN the position reported to
	// Postgres; ServerLSN the end of the server's WAL last heard of.
	LastAppliedLSN string `json:"last_applied_lsn"`
	// LastAppliedPosition is LastAppliedLSN as a number.
	LastAppliedPosition uint64  `json:"last_applied_position"`
	ConfirmedLSN        string  `json:"confirmed_lsn"`
	ServerLSN           string  `json:"server_lsn"`
	LagBytes            int64   `json:"lag_bytes"`
	LagSeconds          float64 `json:"lag_seconds"`
	// Counters since the process started.
	Transactions      uint64 `json:"transactions"`
	Changes           uint64 `json:"changes"`
	FullInvalidations uint64 `json:"full_invalidations"`
	Errors            uint64 `json:"errors"`
	LastError         string `json:"last_error,omitempty"`
	// LastApplied is when the last transaction was applied.
	LastApplied time.Time         `json:"last_applied,omitzero"`
	Tables      map[string]string `json:"tables"`
	// Warnings are the problems found at the last start (tables without
	// REPLICA IDENTITY FULL, tables missing from the publication).
	Warnings []string `json:"warnings,omitempty"`
}
