package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/telemetry"
)

// Config configures the JetStream side of a worker. The fields that are
// settings of the worker (docs/contract.md §8, named in each comment) have no
// defaults here: the worker fills them from the config package, whose table
// holds the defaults, and Validate, which Provision calls, refuses a missing
// one. Only the consumer's own tuning, which no setting exposes, has
// defaults (WithDefaults).
type Config struct {
	// Stream is the requests stream (PAYSTREAM_STREAM). Required.
	Stream string
	// ResultsStream is the outcome events stream
	// (PAYSTREAM_RESULTS_STREAM). Required.
	ResultsStream string
	// DLQStream is the dead-letter stream (PAYSTREAM_DLQ_STREAM). Required.
	DLQStream string
	// Consumer is the durable pull consumer shared by all workers
	// (PAYSTREAM_CONSUMER). Required.
	Consumer string
	// SubjectPrefix prefixes every subject: <prefix>.requests.>,
	// <prefix>.results.<status>, <prefix>.dlq.<reason>
	// (PAYSTREAM_SUBJECT_PREFIX). Required.
	SubjectPrefix string
	// Replicas of each stream and of the consumer
	// (PAYSTREAM_STREAM_REPLICAS): 1 on a single server, 3 on a cluster.
	// At least 1.
	Replicas int
	// Concurrency is the number of payments in flight
	// (PAYSTREAM_CONCURRENCY). At least 1.
	Concurrency int
	// MaxDeliver is the number of deliveries processing allows a message
	// (PAYSTREAM_MAX_DELIVER); the consumer is provisioned with one more, as
	// a safety net for a nak on the last one. At least 1.
	MaxDeliver int
	// AckWait is the consumer's AckWait (PAYSTREAM_ACK_WAIT). InProgress is
	// sent every AckWait/3 while a payment runs. Must be > 0.
	AckWait time.Duration
	// MaxAckPending bounds unacknowledged messages across the fleet
	// (PAYSTREAM_MAX_ACK_PENDING), ≥ 0. 0 means derived from Concurrency:
	// max(1000, 16·Concurrency).
	MaxAckPending int
	// StreamMaxAge is the retention of the requests and results streams
	// (PAYSTREAM_STREAM_MAX_AGE). Must be > 0.
	StreamMaxAge time.Duration
	// DuplicateWindow is the publish de-duplication window
	// (PAYSTREAM_DUPLICATE_WINDOW). Must be > 0.
	DuplicateWindow time.Duration
	// ShutdownTimeout is how long Run waits for in-flight work after its
	// context ends before cancelling it (PAYSTREAM_SHUTDOWN_TIMEOUT). Must be
	// > 0.
	ShutdownTimeout time.Duration
	// RetryBackoff and RetryBackoffMax bound the delay of a nak after a
	// failed publish (PAYSTREAM_RETRY_BACKOFF, _MAX). RetryBackoff must be
	// > 0, RetryBackoffMax at least RetryBackoff.
	RetryBackoff    time.Duration
	RetryBackoffMax time.Duration
	// FetchMaxWait is the longest a pull request waits for messages. No
	// setting: 0 means 1s.
	FetchMaxWait time.Duration
	// MaxFetch caps the messages asked for in one pull. No setting: 0
	// means 256.
	MaxFetch int
	// Tracing makes the spans of each delivery and publish and carries the
	// trace context in NATS headers (consumer/trace.go); nil is tracing
	// off.
	Tracing *telemetry.Tracing
	// Lookahead is how many messages the worker fetches beyond its free
	// slots, to hand them to slots fairly by merchant
	// (PAYSTREAM_FAIR_LOOKAHEAD), ≥ 0. Each one's InProgress heartbeat runs
	// from the fetch. 0 pulls only into free slots: no reordering.
	Lookahead int
	// FairMaxHold is how long a fetched message may wait for a slot before
	// it goes first whatever its merchant. No setting: 0 means 2s.
	FairMaxHold time.Duration
}

// MaxMsgSize is the requests stream's MaxMsgSize: the 64 KiB body limit of the
// contract plus room for headers, so that a body over the limit by less than
// the header allowance still reaches the worker and is dead-lettered invalid.
const MaxMsgSize = 64*1024 + 4*1024

// Defaults of the consumer's own tuning, which no setting exposes.
const (
	defaultFetchMaxWait = time.Second
	defaultMaxFetch     = 256
	defaultFairMaxHold  = 2 * time.Second
)

// Validate returns nil, or one error listing every missing or out-of-range
// field of c, joined with errors.Join. A Config the worker filled from a
// validated config.Config is always valid, so an invalid one is a wiring
// bug.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Stream != "", "stream: required")
	check(c.ResultsStream != "", "results stream: required")
	check(c.DLQStream != "", "dlq stream: required")
	check(c.Consumer != "", "consumer: required")
	check(c.SubjectPrefix != "", "subject prefix: required")
	check(c.Replicas >= 1, "replicas %d: must be at least 1", c.Replicas)
	check(c.Concurrency >= 1, "concurrency %d: must be at least 1", c.Concurrency)
	check(c.MaxDeliver >= 1, "max deliver %d: must be at least 1", c.MaxDeliver)
	check(c.AckWait > 0, "ack wait %v: must be greater than 0", c.AckWait)
	check(c.MaxAckPending >= 0, "max ack pending %d: must not be negative", c.MaxAckPending)
	check(c.StreamMaxAge > 0, "stream max age %v: must be greater than 0", c.StreamMaxAge)
	check(c.DuplicateWindow > 0, "duplicate window %v: must be greater than 0", c.DuplicateWindow)
	check(c.ShutdownTimeout > 0, "shutdown timeout %v: must be greater than 0", c.ShutdownTimeout)
	check(c.RetryBackoff > 0, "retry backoff %v: must be greater than 0", c.RetryBackoff)
	check(c.RetryBackoffMax >= c.RetryBackoff, "retry backoff max %v: must be at least the retry backoff, %v", c.RetryBackoffMax, c.RetryBackoff)
	check(c.FetchMaxWait >= 0, "fetch max wait %v: must not be negative", c.FetchMaxWait)
	check(c.MaxFetch >= 0, "max fetch %d: must not be negative", c.MaxFetch)
	check(c.Lookahead >= 0, "lookahead %d: must not be negative", c.Lookahead)
	check(c.FairMaxHold >= 0, "fair max hold %v: must not be negative", c.FairMaxHold)
	return errors.Join(errs...)
}

// WithDefaults returns a copy of c with the consumer's own tuning filled in:
// FetchMaxWait and MaxFetch when zero, and MaxAckPending derived from
// Concurrency when zero. It fills no setting of the worker; see Validate.
func (c Config) WithDefaults() Config {
	if c.FetchMaxWait <= 0 {
		c.FetchMaxWait = defaultFetchMaxWait
	}
	if c.MaxFetch <= 0 {
		c.MaxFetch = defaultMaxFetch
	}
	if c.FairMaxHold <= 0 {
		c.FairMaxHold = defaultFairMaxHold
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = max(1000, 16*c.Concurrency)
	}
	return c
}

// RequestsSubject is the filter of the requests stream: <prefix>.requests.>.
func (c Config) RequestsSubject() string { return c.SubjectPrefix + ".requests.>" }

// ResultSubject is where outcomes of a status are announced.
func (c Config) ResultSubject(status string) string { return c.SubjectPrefix + ".results." + status }

// DLQSubject is where dead letters of a reason go.
func (c Config) DLQSubject(reason string) string { return c.SubjectPrefix + ".dlq." + reason }

// StreamConfigs returns the three streams of docs/contract.md §3 for a valid
// c.
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

// ConsumerConfig returns the durable pull consumer of docs/contract.md §3
// for a valid c.
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
// It is idempotent and safe when several workers start at once. An invalid
// cfg is an error, and nothing is created.
func Provision(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("provision: invalid consumer.Config: %w", err)
	}
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
