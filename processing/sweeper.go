package processing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/telemetry"
)

// errNoRequest: a stuck row without the stored request to re-publish.
var errNoRequest = errors.New("no stored request to re-publish")

// SweeperConfig configures a Sweeper. Interval and Grace have no defaults:
// the worker fills them from the settings of the config package, and
// NewSweeper panics when one is missing or out of range (see Validate).
type SweeperConfig struct {
	// Interval between sweeps (PAYSTREAM_SWEEP_INTERVAL). Must be > 0.
	Interval time.Duration
	// Grace is how long past its lease's end a row must be to count as stuck,
	// and how long before a row swept is swept again
	// (PAYSTREAM_SWEEP_GRACE). Must be > 0.
	Grace time.Duration
	// Limit is the most rows re-published per sweep. It is no setting of
	// the worker: 0 means DefaultSweepLimit.
	Limit int
	// Retention is how long final rows are kept (PAYSTREAM_RETENTION); 0
	// keeps them for ever.
	Retention time.Duration
}

// DefaultSweepLimit is the most rows a sweep re-publishes when
// SweeperConfig.Limit is 0.
const DefaultSweepLimit = 500

// Validate returns nil, or one error listing every out-of-range field of c,
// joined with errors.Join. NewSweeper panics with it (a wiring bug).
func (c SweeperConfig) Validate() error {
	var errs []error
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval %v: must be greater than 0", c.Interval))
	}
	if c.Grace <= 0 {
		errs = append(errs, fmt.Errorf("grace %v: must be greater than 0", c.Grace))
	}
	if c.Limit < 0 {
		errs = append(errs, fmt.Errorf("limit %d: must not be negative", c.Limit))
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("retention %v: must not be negative", c.Retention))
	}
	return errors.Join(errs...)
}

// Sweeper rescues payments stuck in processing (docs/contract.md §6.7) — a holder
// that died on its message's last delivery, say — by re-publishing their
// requests, and deletes final rows older than the retention. One worker of
// the fleet sweeps at a time: find reports ok=false when another holds
// the sweep lock.
type Sweeper struct {
	cfg SweeperConfig
	// find returns stuck rows and marks them swept; republish publishes a
	// body on a subject with a message id; del deletes up to limit final
	// rows completed before a time (nil disables retention).
	find      func(ctx context.Context, grace time.Duration, limit int) (rows []payment.Stuck, ok bool, err error)
	republish func(ctx context.Context, subject string, body []byte, msgID string) error
	del       func(ctx context.Context, before time.Time, limit int) (int64, error)

	log zerolog.Logger
	m   *telemetry.Metrics
}

// NewSweeper returns a Sweeper; find and republish are required. It panics
// on a missing dependency or an invalid SweeperConfig (wiring bugs).
func NewSweeper(cfg SweeperConfig, find func(context.Context, time.Duration, int) ([]payment.Stuck, bool, error),
	republish func(context.Context, string, []byte, string) error,
	del func(context.Context, time.Time, int) (int64, error),
	logger zerolog.Logger, m *telemetry.Metrics) *Sweeper {
	if find == nil || republish == nil || m == nil {
		panic("processing.NewSweeper: find, republish and metrics are required")
	}
	if err := cfg.Validate(); err != nil {
		panic("processing.NewSweeper: invalid SweeperConfig: " + err.Error())
	}
	if cfg.Limit == 0 {
		cfg.Limit = DefaultSweepLimit
	}
	return &Sweeper{cfg: cfg, find: find, republish: republish, del: del,
		log: logger.With().Str("component", "sweeper").Logger(), m: m}
}

// Run sweeps every interval until ctx ends; it returns nil then.
func (s *Sweeper) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := s.SweepOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("sweep")
		}
		if err := s.deleteExpired(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("retention")
		}
	}
}

// SweepOnce re-publishes the stuck payments found now, each with message id
// sweep-<key>-<attempts>, and returns how many it re-published. Failures to
// re-publish (and rows without a stored request) are joined into the error;
// the other rows still go out.
func (s *Sweeper) SweepOnce(ctx context.Context) (int, error) {
	rows, ok, err := s.find(ctx, s.cfg.Grace, s.cfg.Limit)
	if err != nil {
		return 0, fmt.Errorf("find stuck payments: %w", err)
	}
	if !ok {
		return 0, nil
	}
	var errs []error
	n := 0
	for _, r := range rows {
		if r.Subject == "" || len(r.Body) == 0 {
			// Re-publishing nothing would only dead-letter it as invalid,
			// and the row would come back every grace period: leave it to
			// an operator.
			errs = append(errs, fmt.Errorf("republish %s: %w", r.Key, errNoRequest))
			continue
		}
		id := fmt.Sprintf("sweep-%s-%d", r.Key, r.Attempts)
		if err := s.republish(ctx, r.Subject, r.Body, id); err != nil {
			errs = append(errs, fmt.Errorf("republish %s: %w", r.Key, err))
			continue
		}
		n++
		s.m.Swept.Inc()
		s.log.Warn().Str("payment_id", r.PaymentID).Str("idempotency_key", r.Key).
			Int("attempts", r.Attempts).Msg("re-published a payment stuck in processing")
	}
	return n, errors.Join(errs...)
}

func (s *Sweeper) deleteExpired(ctx context.Context) error {
	if s.del == nil || s.cfg.Retention <= 0 {
		return nil
	}
	n, err := s.del(ctx, time.Now().Add(-s.cfg.Retention), 10_000)
	if err != nil {
		return fmt.Errorf("delete final rows older than %s: %w", s.cfg.Retention, err)
	}
	if n > 0 {
		s.log.Info().Int64("deleted", n).Msg("deleted final rows past retention")
	}
	return nil
}
