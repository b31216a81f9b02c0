// Package ops holds the operators' queries and actions — the fleet's status,
// a payment's story, the dead letters and their replay, retention and the
// audit of operator actions — written once for both of their faces: the
// paystreamctl command (cmd/paystreamctl) and the console. Each function
// takes its dependencies (a Postgres pool, a JetStream handle, a clock) as
// arguments and returns plain values with JSON field names that are part of
// the paystreamctl contract (docs/contract.md §9): the faces only format
// them.
package ops
