// Package defaults gives tests and tools the configuration of a worker left
// at its defaults, for the packages below the commands: config.Default()
// mapped onto consumer.Config, processing.Config and
// processing.SweeperConfig as cmd/worker maps a parsed configuration. Those
// packages have no defaults of their own; config's settings table is the one
// place the defaults live. A test of cmd/worker checks that its mapping and
// this one agree.
package defaults

import (
	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
)

// Consumer returns the consumer configuration of a worker at its defaults:
// the streams, consumer and subjects of docs/contract.md §3 on one replica.
// FetchMaxWait and MaxFetch are left to the consumer's own tuning.
func Consumer() consumer.Config {
	d := config.Default()
	return consumer.Config{
		Stream:          d.Stream,
		ResultsStream:   d.ResultsStream,
		DLQStream:       d.DLQStream,
		Consumer:        d.Consumer,
		SubjectPrefix:   d.SubjectPrefix,
		Replicas:        d.StreamReplicas,
		Concurrency:     d.Concurrency,
		MaxDeliver:      d.MaxDeliver,
		AckWait:         d.AckWait,
		MaxAckPending:   d.MaxAckPending,
		StreamMaxAge:    d.StreamMaxAge,
		DuplicateWindow: d.DuplicateWindow,
		ShutdownTimeout: d.ShutdownTimeout,
		RetryBackoff:    d.RetryBackoff,
		RetryBackoffMax: d.RetryBackoffMax,
		Lookahead:       d.FairLookahead,
	}
}

// Processing returns the processor configuration of a worker at its
// defaults with the given lease owner (each worker's own; required).
func Processing(owner string) processing.Config {
	d := config.Default()
	return processing.Config{
		Owner:              owner,
		Lease:              d.Lease,
		MaxDeliver:         d.MaxDeliver,
		RetryBackoff:       d.RetryBackoff,
		RetryBackoffMax:    d.RetryBackoffMax,
		RateLimit:          d.RateLimit,
		RateBurst:          d.RateBurst,
		BreakerFailures:    uint32(d.BreakerFailures),
		BreakerOpenTimeout: d.BreakerOpenTimeout,
		Limits:             payment.Limits{MaxAmountMinor: d.MaxAmountMinor, SubjectPrefix: d.SubjectPrefix},
	}
}

// Sweeper returns the sweeper configuration of a worker at its defaults.
func Sweeper() processing.SweeperConfig {
	d := config.Default()
	return processing.SweeperConfig{
		Interval:          d.SweepInterval,
		Grace:             d.SweepGrace,
		RetentionInterval: d.RetentionInterval,
		Limits:            payment.Limits{MaxAmountMinor: d.MaxAmountMinor, SubjectPrefix: d.SubjectPrefix},
		LookupTimeout:     d.GatewayTimeout,
	}
}
