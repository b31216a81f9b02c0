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
	// RetentionInterval is how often a sweeping worker calls
	// SweeperDeps.RetainFunc (PAYSTREAM_RETENTION_INTERVAL); 0 calls it
	// after every sweep. Must not be negative.
	RetentionInterval time.Duration
	// Limits are the request limits a stored request must still meet to be
	// re-published; one that no longer does is settled failed (§6.9).
	Limits payment.Limits
	// LookupTimeout bounds the lookup made before such a row is settled
	// (PAYSTREAM_GATEWAY_TIMEOUT). Must be > 0.
	LookupTimeout time.Duration
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
	if c.RetentionInterval < 0 {
		errs = append(errs, fmt.Errorf("retention interval %v: must not be negative", c.RetentionInterval))
	}
	if c.LookupTimeout <= 0 {
		errs = append(errs, fmt.Errorf("lookup timeout %v: must be greater than 0", c.LookupTimeout))
	}
	return errors.Join(errs...)
}

// SweeperDeps are what a Sweeper works with. FindFunc, RepublishFunc,
// SettleFunc, DeadLetterFunc, AnnounceFunc and LookupFunc are required;
// without RetainFunc there is no retention.
type SweeperDeps struct {
	// FindFunc returns stuck rows and marks them swept; ok is false when
	// another worker holds the sweep lock.
	FindFunc func(ctx context.Context, grace time.Duration, limit int) (rows []payment.Stuck, ok bool, err error)
	// RepublishFunc publishes a stored request on its subject with a
	// message id.
	RepublishFunc func(ctx context.Context, subject string, body []byte, msgID string) error
	// RetainFunc runs retention once: Retention.Run, which deletes final
	// rows past their status's period in batches, one runner of the fleet
	// at a time.
	RetainFunc func(ctx context.Context) error
	// SettleFunc records the final outcome of a row no lease holds, fenced
	// on its status and attempts.
	SettleFunc func(ctx context.Context, c payment.Completion, from payment.Status, completedAt time.Time) (payment.Record, error)
	// DeadLetterFunc dead-letters a stored request (subject, body) with a
	// message id.
	DeadLetterFunc func(ctx context.Context, subject string, body []byte, dl DeadLetter, msgID string) error
	// AnnounceFunc publishes an outcome event.
	AnnounceFunc func(ctx context.Context, o payment.Outcome) error
	// LookupFunc asks the gateway whether it charged under a key.
	LookupFunc func(ctx context.Context, key string) (payment.LookupResult, error)
	// LookupAtFunc, when set, asks the named gateway instead: the one a
	// row is on (docs/contract.md §5, "Several gateways"). Optional.
	LookupAtFunc func(ctx context.Context, gateway, key string) (payment.LookupResult, error)
}

// Sweeper rescues payments stuck in processing (docs/contract.md §6.7) — a
// holder that died on its message's last delivery, say — by re-publishing
// their requests; settles those whose stored request no longer validates
// (§6.9); and runs retention (RetainFunc) every RetentionInterval. One worker of the
// fleet sweeps at a time: FindFunc reports ok=false when another holds the
// sweep lock.
type Sweeper struct {
	cfg  SweeperConfig
	deps SweeperDeps
	log  zerolog.Logger
	m    *telemetry.Metrics
}

// NewSweeper returns a Sweeper. It panics on a missing dependency (a wiring
// bug).
func NewSweeper(cfg SweeperConfig, deps SweeperDeps, logger zerolog.Logger, m *telemetry.Metrics) *Sweeper {
	if deps.FindFunc == nil || deps.RepublishFunc == nil || deps.SettleFunc == nil || deps.DeadLetterFunc == nil ||
		deps.AnnounceFunc == nil || deps.LookupFunc == nil || m == nil {
		panic("processing.NewSweeper: find, republish, settle, dead-letter, announce, lookup and metrics are required")
	}
	if err := cfg.Validate(); err != nil {
		panic("processing.NewSweeper: invalid SweeperConfig: " + err.Error())
	}
	if cfg.Limit == 0 {
		cfg.Limit = DefaultSweepLimit
	}
	return &Sweeper{cfg: cfg, deps: deps, log: logger.With().Str("component", "sweeper").Logger(), m: m}
}

// Run sweeps every interval until ctx ends; it returns nil then.
func (s *Sweeper) Run(ctx context.Context) error {
	var retained time.Time
	every(ctx, s.cfg.Interval, func() {
		if _, err := s.SweepOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("sweep")
		}
		if s.deps.RetainFunc == nil || (!retained.IsZero() && time.Since(retained) < s.cfg.RetentionInterval) {
			return
		}
		retained = time.Now()
		if err := s.deps.RetainFunc(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("retention")
		}
	})
	return nil
}

// every calls round every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, round func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		round()
	}
}

// SweepOnce re-publishes the stuck payments found now, each with message id
// sweep-<key>-<attempts>, and returns how many it re-published. Failures to
// re-publish (and rows without a stored request) are joined into the error;
// the other rows still go out.
func (s *Sweeper) SweepOnce(ctx context.Context) (int, error) {
	rows, ok, err := s.deps.FindFunc(ctx, s.cfg.Grace, s.cfg.Limit)
	if err != nil {
		return 0, fmt.Errorf("find stuck payments: %w", err)
	}
	if !ok {
		return 0, nil
	}
	var errs []error
	n := 0
	for _, r := range rows {
		if ctx.Err() != nil {
			// Stopping: the rest come back after the grace period.
			errs = append(errs, ctx.Err())
			break
		}
		if r.Subject == "" || len(r.Body) == 0 {
			// Re-publishing nothing would only dead-letter it as invalid,
			// and the row would come back every grace period: leave it to
			// an operator.
			errs = append(errs, fmt.Errorf("republish %s: %w", r.Key, errNoRequest))
			continue
		}
		if _, err := payment.Decode(r.Subject, r.Body, s.cfg.Limits); err != nil {
			// Re-publishing it would dead-letter it invalid every round
			// while the row stays processing: settle it instead.
			if err := s.settleInvalid(ctx, r, err); err != nil {
				errs = append(errs, fmt.Errorf("settle %s: %w", r.Key, err))
			}
			continue
		}
		id := fmt.Sprintf("sweep-%s-%d", r.Key, r.Attempts)
		if err := s.deps.RepublishFunc(ctx, r.Subject, r.Body, id); err != nil {
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

// settleInvalid ends a stuck row whose stored request no longer validates
// (docs/contract.md §6.9). Its lease was lost, so an attempt may have
// charged: it is looked up first — a charge found settles it succeeded;
// none settles it failed (error_code invalid) with one invalid dead letter.
// Announcements go out before the row is written, under stable message ids,
// so that a crash in between repeats them rather than loses them; a lookup
// that cannot be answered leaves the row for the next round.
func (s *Sweeper) settleInvalid(ctx context.Context, r payment.Stuck, invalid error) error {
	lctx, cancel := context.WithTimeout(ctx, s.cfg.LookupTimeout)
	start := time.Now()
	var (
		found payment.LookupResult
		err   error
	)
	if s.deps.LookupAtFunc != nil && r.Gateway != "" {
		found, err = s.deps.LookupAtFunc(lctx, r.Gateway, r.Key)
	} else {
		found, err = s.deps.LookupFunc(lctx, r.Key)
	}
	call := payment.LookupAttempt(start, time.Since(start), found, err)
	call.Gateway = r.Gateway
	cancel()
	if err != nil {
		return fmt.Errorf("look up before settling an invalid stored request: %w", err)
	}
	at := time.Now().UTC().Truncate(time.Microsecond)
	// The lookup is recorded with the settlement, under the sweeper's name.
	c := payment.Completion{Key: r.Key, Attempt: r.Attempts, Ambiguous: true, Owner: SettleOwnerSweeper, Gateway: r.Gateway,
		Attempts: []payment.Attempt{call}}
	if found.Found {
		c.Status, c.GatewayChargeID = payment.StatusSucceeded, found.ChargeID
	} else {
		c.Status, c.ErrorCode = payment.StatusFailed, payment.ErrorCodeInvalid
		dl := DeadLetter{Reason: payment.ReasonInvalid, Error: safeText(nil, "stored request: "+invalid.Error())}
		id := fmt.Sprintf("sweep-invalid-%s-%d", r.Key, r.Attempts)
		if err := s.deps.DeadLetterFunc(ctx, r.Subject, r.Body, dl, id); err != nil {
			return fmt.Errorf("dead-letter: %w", err)
		}
	}
	o := payment.Outcome{PaymentID: r.PaymentID, IdempotencyKey: r.Key, Status: c.Status, AmountMinor: r.AmountMinor,
		Currency: r.Currency, GatewayChargeID: c.GatewayChargeID, ErrorCode: c.ErrorCode, Attempts: r.Attempts, CompletedAt: at}
	if err := s.deps.AnnounceFunc(ctx, o); err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	if _, err := s.deps.SettleFunc(ctx, c, payment.StatusProcessing, at); err != nil {
		return err
	}
	s.m.SettledInvalid.Inc()
	s.log.Error().Str("payment_id", r.PaymentID).Str("idempotency_key", r.Key).Str("status", string(c.Status)).
		AnErr("cause", invalid).Msg("settled a stuck payment whose stored request no longer validates")
	return nil
}
