// Package persist keeps a node's created-cache records, their indexes, the
// outbox of delayed invalidations and, optionally, cached values in one
// Pebble database.
//
// A record (Record) says which key is cached, from which arguments, by
// which owner and until when. The store indexes records by label (List, for
// the admin), by the values their arguments constrain (Match, for automatic
// invalidation), by soft deadline (StaleBefore, for the relevance sweep) and
// by hard deadline (RemoveExpired, which a background loop calls).
//
// Writes: Put is synchronous (durable when it returns); PutAsync, for
// delay_logging, queues the record for a background writer that commits
// batches, and never blocks. The WAL sync policy is in writer.go: every
// batch is synced, so a crash loses at most the records still queued.
//
// Faults: a full, read-only or failing disk (or Pebble giving its database
// up) never panics; the store closes the database, is degraded (Health),
// keeps PutAsync records in memory and reopens with backoff. See
// health.go.
//
// Time: the store never reads the clock to decide what a record means;
// RemoveExpired, StaleBefore and DueItems take the time as an argument, and
// the sweep loop and Value use Config.Now.
//
// See the Store type for concurrency and lifecycle, and keys.go for the key
// layout.
package persist
