// Package config reads the configuration of a paystream worker from
// command-line flags and PAYSTREAM_* environment variables (docs/contract.md §8).
//
// Every setting is declared once, in one table: its name, the Config field it
// fills, its default, its usage and its rules. Defaults (Default), flags and
// environment variables (Parse), the list of variables (Vars), validation
// (Validate) and logging (MarshalZerologObject) all derive from that table. A
// setting <NAME> is read from the environment variable PAYSTREAM_<NAME> and the
// flag --<name> (lower case, '_' → '-'): PAYSTREAM_ACK_WAIT and --ack-wait.
// Flags win over the environment, which wins over defaults.
//
// The table is the one place where a setting's default is written down: the
// packages that the commands configure from it (consumer, processing) take
// explicit values and refuse missing ones. Two kinds of default are spelled
// in a library that code outside the worker reads too, and the table takes
// them from there: the stream, consumer and subject names of docs/contract.md
// §3 from package contract, and the largest amount from
// payment.DefaultMaxAmountMinor.
//
// Invalid settings stop a process at start with one error that lists every
// problem, each naming the variable and the flag:
//
//	PAYSTREAM_CONCURRENCY (--concurrency): must be between 1 and 4096, got 0
//	PAYSTREAM_ACK_WAIT (--ack-wait): cannot parse "abc" as a duration (a Go duration such as 30s, 500ms or 2h45m)
//
// Another program that shares settings with the worker reads them from the
// same rows with ParseSettings: the publisher takes the NATS connection
// (NATSSettings), the stream and the subject prefix, with the worker's flags,
// environment variables, rules and messages.
//
// Only cmd/* imports config: the other packages take their own small Config
// structs, which the commands fill from this one. Settings that other parts
// derive (DBMaxConns, MaxAckPending, WorkerID when left at zero, and
// SweepGrace, whose zero means its default) are derived there, not here.
//
// A Config holds secrets; log it with MarshalZerologObject or Redacted.
package config
