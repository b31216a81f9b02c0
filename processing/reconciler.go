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

// ReconcileStore is the store as the reconciler needs it.
type ReconcileStore interface {
	// DueUnknown returns up to limit unknown rows whose next lookup is due
	// and schedules each one's next lookup backoff(tries) later; ok is false
	// when another worker of the fleet is reconciling.
	DueUnknown(ctx context.Context, limit int, backoff func(tries int) time.Duration) (rows []payment.Record, ok bool, err error)
	// Settle records the final outcome of a row in status from, fenced on
	// its status and attempts (payment.ErrFenced otherwise).
	Settle(ctx context.Context, c payment.Completion, from payment.Status, completedAt time.Time) (payment.Record, error)
	// UnknownStats counts the unknown rows and the age of the oldest.
	UnknownStats(ctx context.Context) (count int64, oldest time.Duration, err error)
}

// The worker_id recorded for the lookups of rows that no lease holds,
// settled by the reconciler or the sweeper (Completion.Owner of Settle).
const (
	SettleOwnerReconciler = "reconciler"
	SettleOwnerSweeper    = "sweeper"
)

// ReconcilerConfig configures a Reconciler; every field is required.
type ReconcilerConfig struct {
	// Interval between rounds.
	Interval time.Duration
	// Limit is the most rows looked up per round.
	Limit int
	// BackoffBase and BackoffMax bound the delay before a row whose lookup
	// failed is asked again: BackoffBase·2^(tries-1), capped, jittered.
	BackoffBase, BackoffMax time.Duration
	// LookupTimeout bounds one lookup.
	LookupTimeout time.Duration
}

// Reconciler settles rows left unknown (docs/contract.md §6.8): one worker of
// the fleet at a time looks each one up at the gateway, with backoff, until
// the gateway answers; then it announces the settled outcome and records it
// — succeeded with the gateway's charge id, or failed (exhausted) when
// there was no charge.
type Reconciler struct {
	cfg   ReconcilerConfig
	store ReconcileStore
	gw    interface {
		Name() string
		Lookup(ctx context.Context, key string) (payment.LookupResult, error)
	}
	announce func(ctx context.Context, o payment.Outcome) error
	gws      GatewayByName // nil: every row is asked of gw
	log      zerolog.Logger
	m        *telemetry.Metrics
}

// NewReconciler returns a Reconciler; announce publishes an outcome event
// and returns once it is stored. It panics on a missing dependency or
// setting (a wiring bug).
func NewReconciler(cfg ReconcilerConfig, store ReconcileStore, gw Gateway,
	announce func(ctx context.Context, o payment.Outcome) error, logger zerolog.Logger, m *telemetry.Metrics) *Reconciler {
	if store == nil || gw == nil || announce == nil || m == nil {
		panic("processing.NewReconciler: store, gateway, announce and metrics are required")
	}
	if cfg.Interval <= 0 || cfg.Limit <= 0 || cfg.BackoffBase <= 0 || cfg.BackoffMax <= 0 || cfg.LookupTimeout <= 0 {
		panic(fmt.Sprintf("processing.NewReconciler: every setting is required, got %+v", cfg))
	}
	return &Reconciler{cfg: cfg, store: store, gw: gw, announce: announce,
		log: logger.With().Str("component", "reconciler").Logger(), m: m}
}

// Run reconciles every interval until ctx ends; it returns nil then.
func (r *Reconciler) Run(ctx context.Context) error {
	every(ctx, r.cfg.Interval, func() {
		if _, err := r.ReconcileOnce(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn().Err(err).Msg("reconcile")
		}
	})
	return nil
}

// ReconcileOnce looks up the unknown rows that are due and settles those the
// gateway answers for; it returns how many it settled. Rows whose lookup
// failed are asked again after their backoff; failures are joined into the
// error. It also refreshes the unknown-row gauges.
func (r *Reconciler) ReconcileOnce(ctx context.Context) (int, error) {
	defer r.refreshGauges(ctx)
	rows, ok, err := r.store.DueUnknown(ctx, r.cfg.Limit, func(tries int) time.Duration {
		return Backoff(r.cfg.BackoffBase, r.cfg.BackoffMax, uint64(max(tries, 1)))
	})
	if err != nil {
		return 0, fmt.Errorf("find unknown payments: %w", err)
	}
	if !ok {
		return 0, nil
	}
	var errs []error
	settled := 0
	for _, row := range rows {
		if ctx.Err() != nil {
			break
		}
		if err := r.settle(ctx, row); err != nil {
			errs = append(errs, err)
			continue
		}
		settled++
	}
	return settled, errors.Join(errs...)
}

func (r *Reconciler) settle(ctx context.Context, row payment.Record) error {
	lctx, cancel := context.WithTimeout(ctx, r.cfg.LookupTimeout)
	start := time.Now()
	gw := r.gw
	if row.Gateway != "" && r.gws != nil {
		// Ask the gateway the payment was sent to (docs/contract.md §5).
		g, ok := r.gws.GatewayNamed(row.Gateway)
		if !ok {
			cancel()
			r.m.Reconciliations.WithLabelValues("error").Inc()
			return fmt.Errorf("look up %s: its gateway %q is not configured here", row.IdempotencyKey, row.Gateway)
		}
		gw = g
	}
	found, err := gw.Lookup(lctx, row.IdempotencyKey)
	call := payment.LookupAttempt(start, time.Since(start), found, err)
	call.Gateway = gw.Name()
	cancel()
	if err != nil {
		r.m.Reconciliations.WithLabelValues("error").Inc()
		return fmt.Errorf("look up %s: %w", row.IdempotencyKey, err)
	}
	// The settling lookup is recorded with the settlement (a lookup that got
	// no answer writes nothing, so it is not recorded).
	c := payment.Completion{Key: row.IdempotencyKey, Attempt: row.Attempts, Gateway: row.Gateway, Ambiguous: true,
		Owner: SettleOwnerReconciler, Attempts: []payment.Attempt{call}}
	if c.Gateway == "" {
		c.Gateway = r.gw.Name()
	}
	if found.Found {
		c.Status, c.GatewayChargeID = payment.StatusSucceeded, found.ChargeID
	} else {
		c.Status, c.ErrorCode = payment.StatusFailed, payment.ErrorCodeExhausted
	}
	// Announce first, then record: a crash in between announces again
	// (same message id) on the next round, whereas a record without its
	// announcement would never be announced. Nobody else changes an unknown
	// row (a claim of it is acked), so the lookup's answer stands.
	at := time.Now().UTC().Truncate(time.Microsecond)
	settled := row
	settled.Status, settled.GatewayChargeID, settled.ErrorCode = c.Status, c.GatewayChargeID, c.ErrorCode
	settled.Gateway, settled.CompletedAt = c.Gateway, at
	if err := r.announce(ctx, settled.Outcome()); err != nil {
		r.m.Reconciliations.WithLabelValues("error").Inc()
		return fmt.Errorf("announce %s %s: %w", row.IdempotencyKey, c.Status, err)
	}
	if _, err := r.store.Settle(ctx, c, payment.StatusUnknown, at); err != nil {
		r.m.Reconciliations.WithLabelValues("error").Inc()
		return fmt.Errorf("settle %s %s: %w", row.IdempotencyKey, c.Status, err)
	}
	r.m.Reconciliations.WithLabelValues(string(c.Status)).Inc()
	r.log.Info().Str("payment_id", row.PaymentID).Str("idempotency_key", row.IdempotencyKey).
		Str("status", string(c.Status)).Str("gateway_charge_id", c.GatewayChargeID).
		Msg("settled a payment whose outcome was unknown")
	return nil
}

func (r *Reconciler) refreshGauges(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	n, oldest, err := r.store.UnknownStats(ctx)
	if err != nil {
		r.log.Warn().Err(err).Msg("count unknown payments")
		return
	}
	r.m.UnknownRows.Set(float64(n))
	r.m.UnknownOldest.Set(oldest.Seconds())
}
