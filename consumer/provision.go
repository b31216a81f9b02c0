package consumer

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Config configures the JetStream side of a worker. Zero fields take their
// defaults (docs/contract.md §3).
type Config struct {
	// Stream is the requests stream; default "PAYMENTS".
	Stream string
	// ResultsStream is the outcome events stream; default "PAYMENT_RESULTS".
	ResultsStream string
	// DLQStream is the dead-letter stream; default "PAYMENTS_DLQ".
	DLQStream string
	// Consumer is the durable pull consumer shared by all workers; default
	// "payment-workers".
	Consumer string
	// SubjectPrefix prefixes every subject: <prefix>.requests.>,
	// <prefix>.results.<status>, <prefix>.dlq.<reason>; default "payments".
	SubjectPrefix string
	// Replicas of each stream; default 1. Use 3 on a cluster.
	Replicas int
	// Concurrency is the number of payments in flight; default 64.
	Concurrency int
	// MaxDeliver is the number of deliveries processing allows a message
	// (PAYSTREAM_MAX_DELIVER); the consumer is provisioned with one more, as
	// a safety net for a nak on the last one. Default 10.
	MaxDeliver int
	// AckWait is the consumer's AckWait; default 30s. InProgress is sent
	// every AckWait/3 while a payment runs.
	AckWait time.Duration
	// MaxAckPending bounds unacknowledged messages across the fleet; default
	// max(1000, 16·Concurrency).
	MaxAckPending int
	// StreamMaxAge is the retention of the requests and results streams;
	// default 7 days.
	StreamMaxAge time.Duration
	// DuplicateWindow is the publish de-duplication window; default 2m.
	DuplicateWindow time.Duration
	// ShutdownTimeout is how long Run waits for in-flight work after its
	// context ends before cancelling it; default 30s.
	ShutdownTimeout time.Duration
	// RetryBackoff and RetryBackoffMax bound the delay of a nak after a
	// failed publish (PAYSTREAM_RETRY_BACKOFF, _MAX); defaults 500ms and 30s.
	RetryBackoff    time.Duration
	RetryBackoffMax time.Duration
	// FetchMaxWait is the longest a pull request waits for messages;
	// default 1s.
	FetchMaxWait time.Duration
	// MaxFetch caps the messages asked for in one pull; default 256.
	MaxFetch int
}

// MaxMsgSize is the requests stream's MaxMsgSize: the 64 KiB body limit of the
// contract plus room for headers, so that a body over the limit by less than
// the header allowance still reaches the worker and is dead-lettered invalid.
const MaxMsgSize = 64*1024 + 4*1024

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Stream, "PAYMENTS")
	def(&c.ResultsStream, "PAYMENT_RESULTS")
	def(&c.DLQStream, "PAYMENTS_DLQ")
	def(&c.Consumer, "payment-workers")
	def(&c.SubjectPrefix, "payments")
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 10
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = max(1000, 16*c.Concurrency)
	}
	if c.StreamMaxAge <= 0 {
		c.StreamMaxAge = 7 * 24 * time.Hour
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 500 * time.Millisecond
	}
	if c.RetryBackoffMax < c.RetryBackoff {
		c.RetryBackoffMax = max(c.RetryBackoff, 30*time.Second)
	}
	if c.FetchMaxWait <= 0 {
		c.FetchMaxWait = time.Second
	}
	if c.MaxFetch <= 0 {
		c.MaxFetch = 256
	}
	return c
}

// RequestsSubject is the filter of the requests stream: <prefix>.requests.>.
func (c Config) RequestsSubject() string { return c.SubjectPrefix + ".requests.>" }

// ResultSubject is where outcomes of a status are announced.
func (c Config) ResultSubject(status string) string { return c.SubjectPrefix + ".results." + status }

// DLQSubject is where dead letters of a reason go.
func (c Config) DLQSubject(reason string) string { return c.SubjectPrefix + ".dlq." + reason }

// StreamConfigs returns the three streams of docs/contract.md §3.
func (c Config) StreamConfigs() []jetstream.StreamConfig {
	c = c.WithDefaults()
	return []jetstream.StreamConfig{
		{
			Name:        c.Stream,
			Description: "paystream payment requests",
			Subjects:    []string{c.RequestsSubject()},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      c.StreamMaxAge,
			MaxMsgSize:  MaxMsgSize,
			Duplicates:  c.DuplicateWindow,
			Replicas:    c.Replicas,
		},
		{
			Name:        c.ResultsStream,
			Description: "paystream payment outcomes",
			Subjects:    []string{c.SubjectPrefix + ".results.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      c.StreamMaxAge,
			Duplicates:  c.DuplicateWindow,
			Replicas:    c.Replicas,
		},
		{
			Name:        c.DLQStream,
			Description: "paystream dead letters: kept until an operator acts",
			Subjects:    []string{c.SubjectPrefix + ".dlq.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Duplicates:  c.DuplicateWindow,
			Replicas:    c.Replicas,
		},
	}
}

// ConsumerConfig returns the durable pull consumer of docs/contract.md §3.
func (c Config) ConsumerConfig() jetstream.ConsumerConfig {
	c = c.WithDefaults()
	return jetstream.ConsumerConfig{
		Durable:       c.Consumer,
		Description:   "paystream workers",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		// One delivery more than processing counts: a nak on what
		// processing sees as the last delivery (a lost answer to a
		// committed write, a publish that failed at shutdown) gets one more
		// delivery, whose claim re-announces the recorded outcome rather
		// than leave it unannounced or the message unprocessed.
		MaxDeliver:    c.MaxDeliver + 1,
		MaxAckPending: c.MaxAckPending,
		FilterSubject: c.RequestsSubject(),
		Replicas:      c.Replicas,
	}
}

// Provision creates or updates the three streams and the durable consumer.
// It is idempotent and safe when several workers start at once.
func Provision(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg = cfg.WithDefaults()
	for _, sc := range cfg.StreamConfigs() {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("create or update stream %s: %w", sc.Name, err)
		}
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, cfg.ConsumerConfig()); err != nil {
		return fmt.Errorf("create or update consumer %s on %s: %w", cfg.Consumer, cfg.Stream, err)
	}
	return nil
}
