// Package contract spells the names that docs/contract.md §3 gives a
// paystream deployment which does not choose its own: the three JetStream
// streams, the durable consumer the workers share, and the subject prefix.
//
// They are written here once. The config package's settings table takes its
// defaults from them (PAYSTREAM_STREAM and the others), and package publish
// reads an empty name of its Config as the name here. Packages below the
// commands (consumer, processing) take every name explicitly. The package
// imports nothing, so that any package may use it.
package contract

// The names of docs/contract.md §3.
const (
	// Stream is the JetStream stream of payment requests (PAYSTREAM_STREAM).
	Stream = "PAYMENTS"
	// ResultsStream is the stream of outcome events
	// (PAYSTREAM_RESULTS_STREAM).
	ResultsStream = "PAYMENT_RESULTS"
	// DLQStream is the stream of dead letters (PAYSTREAM_DLQ_STREAM).
	DLQStream = "PAYMENTS_DLQ"
	// Consumer is the durable pull consumer shared by all workers
	// (PAYSTREAM_CONSUMER).
	Consumer = "payment-workers"
	// SubjectPrefix is the first subject token (PAYSTREAM_SUBJECT_PREFIX):
	// requests go to <prefix>.requests.<merchant_id>, outcomes to
	// <prefix>.results.<status>, dead letters to <prefix>.dlq.<reason>.
	SubjectPrefix = "payments"
	// WorkersBucket is the NATS KV bucket in which every worker keeps its
	// heartbeat record (package fleet).
	WorkersBucket = "paystream_workers"
	// GatewaysBucket is the NATS KV bucket in which the workers share each
	// gateway's budget, breaker votes and probe lease (package fleet).
	GatewaysBucket = "paystream_gateways"
)
