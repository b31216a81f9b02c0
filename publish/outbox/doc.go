// Package outbox is a transactional outbox for upstream Go services that keep
// their data in PostgreSQL: Enqueue writes a payment request into the
// paystream_outbox table inside the caller's own transaction, so the request
// exists exactly when the caller's transaction commits, and a Relay moves
// committed rows to JetStream and deletes them once the stream acknowledged
// them.
//
// The table comes from Migrate (or `publisher outbox migrate`), which records
// its versions in its own goose table, MigrationTable, so that the outbox can
// live in a database that also holds the worker's tables.
//
// Delivery is at least once from the relay and exactly once into the stream:
// every message carries Nats-Msg-Id = payment_id, so a relay that dies after
// the PubAck but before deleting the rows publishes them again on its next
// round, and JetStream drops the copies within its duplicate window
// (PAYSTREAM_DUPLICATE_WINDOW, at least 2 minutes; docs/contract.md §3).
//
// Rows are spread over Partitions partitions by a hash of merchant_id. A
// relay publishes a partition's rows in id order (the order of the inserts'
// sequence values) while holding a transaction-scoped advisory lock on that
// partition, so several relays may run: each partition is relayed by one of
// them at a time, the others skip it. See Relay for the ordering guarantee
// and its one exception.
//
// See docs/upstream.md for how an upstream team publishes and consumes
// outcomes.
package outbox
