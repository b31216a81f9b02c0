// Command publisher publishes payment requests to the PAYMENTS JetStream
// stream: generated load, or JSON lines from a file or standard input.
//
// Generated load (the default) is deterministic for a --seed: --count items
// spread over --merchants merchants, a --duplicates fraction re-sending an
// earlier request's exact body under a new Nats-Msg-Id (so that the workers'
// idempotency table, not JetStream, must catch it) and an --invalid fraction
// of invalid messages of several kinds (see package publish, Generate).
// Without --seed a seed is chosen and printed in the summary.
//
// With --from FILE (or - for standard input) each non-blank line is a
// request body, published as it is to <prefix>.requests.<merchant_id of the
// body> with Nats-Msg-Id set to its payment_id (when it is a string). A line
// that is not a JSON object with a string merchant_id that can be a subject
// token is reported on standard error with its line number and counted as
// failed. A blocking standard input is read line by line: Ctrl-C takes effect
// at the next line or at end of input.
//
// Progress goes to standard error: a progress bar on a terminal, a line every
// 2 seconds otherwise, nothing with --quiet. The summary goes to standard
// output, as text or, with --summary-json, as one JSON object:
//
//	{"published":…, "duplicates_rejected_by_server":…, "failed":…,
//	 "valid":…, "duplicates_sent":…, "invalid_sent":…, "expected_declines":…,
//	 "sent":…, "elapsed":<seconds>, "rate":<acknowledged messages per second>,
//	 "seed":…, "interrupted":…}
//
// published counts messages the stream stored; duplicates_rejected_by_server
// those it acknowledged as duplicates of an earlier Nats-Msg-Id and did not
// store; failed those not acknowledged (and unparseable lines).
// valid, duplicates_sent and invalid_sent count the messages sent by kind
// (for --from, valid and invalid_sent come from the request validation;
// duplicates_sent stays 0), and expected_declines the valid ones the fake
// gateway declines (amount_minor ending in 13). The command exits non-zero
// when anything failed or it was interrupted (Ctrl-C: it stops sending,
// waits a few seconds for the publishes in flight, and prints the partial
// summary).
//
// The publisher shares settings with the worker, read from the same rows of
// the config package's table: the same flags and environment variables (flags
// winning), defaults and checks. They are the NATS connection —
// PAYSTREAM_NATS_URL, PAYSTREAM_NATS_CREDS, PAYSTREAM_NATS_USER,
// PAYSTREAM_NATS_PASSWORD, PAYSTREAM_NATS_TOKEN, PAYSTREAM_NATS_TLS_CA,
// PAYSTREAM_NATS_TLS_CERT and PAYSTREAM_NATS_TLS_KEY, connected through
// package natsconn as the worker connects (docs/security.md) — and
// PAYSTREAM_STREAM and PAYSTREAM_SUBJECT_PREFIX.
//
// Two subcommands serve the transactional outbox of package
// publish/outbox (docs/upstream.md):
//
//   - `publisher outbox migrate` creates or updates the outbox table in the
//     database of PAYSTREAM_DATABASE_URL (the upstream service's own
//     database) and exits.
//   - `publisher outbox relay` publishes committed outbox rows until SIGINT or
//     SIGTERM, then exits 0. It reads the NATS settings above,
//     PAYSTREAM_STREAM, PAYSTREAM_DATABASE_URL, PAYSTREAM_HTTP_ADDR (serving
//     /metrics and /healthz: 200 while the relay runs and the database
//     answers) and PAYSTREAM_LOG_LEVEL and _FORMAT, plus its own flags
//     --relay-batch-size and --relay-concurrency. It waits for NATS and
//     reconnects for ever, as the worker does; several relays may run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, a second one kills the process at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "publisher:", err)
		os.Exit(2)
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "publisher:", err)
		os.Exit(130)
	default:
		fmt.Fprintln(os.Stderr, "publisher:", err)
		os.Exit(1)
	}
}
