// Package store is paystream's Postgres layer: the payments table and its
// versioned migrations, the claim of an idempotency key under a lease, the
// fenced recording of outcomes, the sweeper's and retention's queries, and
// a Batcher that group-commits many callers' operations.
//
// # Claims and leases
//
// Claim implements docs/contract.md §6 step 3 in one statement (one round trip, one
// transaction): a PL/pgSQL function, created by the migrations, takes the
// claims as parallel arrays and, key by key in byte order, tries the key's
// transaction-scoped advisory lock pg_try_advisory_xact_lock(
// hashtextextended(key, 0)), then inspects or inserts the row under FOR
// UPDATE. A single Claim is a batch of one. Lease times come from the
// database clock, never the worker's.
//
// A lease is identified by (key, attempts, owner): attempts is the fence
// token returned as ClaimResult.Attempt. Complete and Release write only if
// the row is still processing under that lease, and otherwise return
// payment.ErrFenced without writing anything.
//
// # Batches
//
// The batch forms (ClaimBatch, CompleteBatch, ReleaseBatch) handle many
// keys in one statement. Per-item outcomes (busy, conflict, fenced, ...) are
// results; a batch error means the statement failed as a whole and nothing
// was written. Batcher gathers concurrent callers' requests into such
// batches. Each batch takes one advisory lock per distinct key in one
// transaction, and advisory locks live in the server's shared lock table
// (max_locks_per_transaction × max_connections entries): size MaxBatch and
// the number of workers so that their product stays well inside it.
//
// # Errors
//
// Errors are wrapped with the operation and key, never a request body.
// Transient database failures wrap ErrRetryable, a missing row
// ErrNotFound, and malformed requests ErrInvalidArgument; context errors
// pass through.
package store
