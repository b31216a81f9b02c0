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

// RetentionJob is the name of the fleet-wide retention job's lease.
const RetentionJob = "retention"

// RetentionConfig configures a Retention. Periods, Batch and Owner have no
// defaults: the worker and paystreamctl fill them from the settings of the
// config package.
type RetentionConfig struct {
	// Periods is how long final rows of each status are kept after their
	// completion (PAYSTREAM_RETENTION and PAYSTREAM_RETENTION_<STATUS>). A
	// status that is missing, or whose period is not positive, is kept for
	// ever. Only succeeded, declined and failed may appear: rows in
	// processing or unknown are never deleted.
	Periods map[payment.Status]time.Duration
	// Batch is how many rows one statement deletes
	// (PAYSTREAM_RETENTION_BATCH). Must be > 0.
	Batch int
	// Pause is the wait between two batches (PAYSTREAM_RETENTION_PAUSE),
	// so that a large backlog never storms the database. ≥ 0.
	Pause time.Duration
	// Owner identifies the runner in the job lease (the worker id, or
	// paystreamctl's). Required.
	Owner string
}

// Validate returns nil, or one error listing every problem of c.
func (c RetentionConfig) Validate() error {
	var errs []error
	for st := range c.Periods {
		if !st.Final() {
			errs = append(errs, fmt.Errorf("period of status %q: only succeeded, declined and failed rows may be deleted", st))
		}
	}
	if c.Batch <= 0 {
		errs = append(errs, fmt.Errorf("batch %d: must be greater than 0", c.Batch))
	}
	if c.Pause < 0 {
		errs = append(errs, fmt.Errorf("pause %v: must not be negative", c.Pause))
	}
	if c.Owner == "" {
		errs = append(errs, errors.New("owner: required"))
	}
	return errors.Join(errs...)
}

// RetentionStore is what a Retention needs of the database.
type RetentionStore interface {
	// DeleteExpired deletes at most limit rows of status completed before
	// a time and returns how many.
	DeleteExpired(ctx context.Context, status payment.Status, before time.Time, limit int) (int64, error)
	// CountExpired counts the rows of status completed before a time.
	CountExpired(ctx context.Context, status payment.Status, before time.Time) (int64, error)
	// AcquireJobLease takes or renews a job's lease for ttl; false when
	// another owner holds it.
	AcquireJobLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	// ReleaseJobLease ends owner's lease of a job.
	ReleaseJobLease(ctx context.Context, name, owner string) error
}

// RetentionStatus is the part of a retention run about one status.
type RetentionStatus struct {
	Status payment.Status `json:"status"`
	// Period is the retention period as a Go duration, or "-1" when the
	// status is kept for ever (KeptForever; then nothing else is set).
	Period      string `json:"period"`
	KeptForever bool   `json:"kept_for_ever"`
	// Before is the cut: rows completed before it go.
	Before time.Time `json:"before,omitzero"`
	// Rows is how many rows were deleted, or in a dry run would be.
	Rows int64 `json:"rows"`
	// Batches is how many delete statements ran.
	Batches int `json:"batches"`
}

// RetentionReport is the outcome of a retention run.
type RetentionReport struct {
	// Ran is false when another runner held the job: nothing was done.
	Ran    bool              `json:"ran"`
	DryRun bool              `json:"dry_run"`
	Total  int64             `json:"total"`
	Status []RetentionStatus `json:"statuses"`
}

// Retention deletes final payment rows older than their status's period,
// in small batches with a pause between them, one runner of the fleet at a
// time (a job lease in the database). The worker's sweeper runs it on a
// schedule; `paystreamctl retention run` runs it on demand.
type Retention struct {
	cfg   RetentionConfig
	store RetentionStore
	log   zerolog.Logger
	m     *telemetry.Metrics
	now   func() time.Time
}

// NewRetention returns a Retention. It panics on an invalid config or a
// missing dependency (a wiring bug). m may be nil (paystreamctl has no
// metrics endpoint).
func NewRetention(cfg RetentionConfig, st RetentionStore, logger zerolog.Logger, m *telemetry.Metrics) *Retention {
	if st == nil {
		panic("processing.NewRetention: a store is required")
	}
	if err := cfg.Validate(); err != nil {
		panic("processing.NewRetention: invalid RetentionConfig: " + err.Error())
	}
	return &Retention{cfg: cfg, store: st, log: logger.With().Str("component", "retention").Logger(), m: m, now: time.Now}
}

// leaseTTL is how long the job lease lasts between two renewals: a batch
// and a pause, with room to spare.
func (r *Retention) leaseTTL() time.Duration { return max(time.Minute, 10*r.cfg.Pause) }

// Run runs retention once: for each final status with a period, it deletes
// the rows completed more than the period ago in batches of cfg.Batch,
// pausing cfg.Pause between batches and renewing the job lease before
// each. A dry run only counts them (and takes no lease). Run reports
// Ran=false when another runner holds the job; it stops when ctx ends.
func (r *Retention) Run(ctx context.Context, dryRun bool) (RetentionReport, error) {
	rep := RetentionReport{DryRun: dryRun, Status: []RetentionStatus{}}
	now := r.now()
	if !dryRun {
		ok, err := r.store.AcquireJobLease(ctx, RetentionJob, r.cfg.Owner, r.leaseTTL())
		if err != nil {
			r.count(ctx, "error")
			return rep, fmt.Errorf("retention: %w", err)
		}
		if !ok {
			r.count(ctx, "busy")
			return rep, nil
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := r.store.ReleaseJobLease(rctx, RetentionJob, r.cfg.Owner); err != nil {
				r.log.Warn().Err(err).Msg("release the retention lease")
			}
		}()
	}
	rep.Ran = true
	first := true
	for _, st := range []payment.Status{payment.StatusSucceeded, payment.StatusDeclined, payment.StatusFailed} {
		period := r.cfg.Periods[st]
		s := RetentionStatus{Status: st}
		if period <= 0 {
			s.KeptForever, s.Period = true, "-1"
			rep.Status = append(rep.Status, s)
			continue
		}
		s.Period = period.String()
		s.Before = now.Add(-period).UTC()
		if dryRun {
			n, err := r.store.CountExpired(ctx, st, s.Before)
			if err != nil {
				return rep, fmt.Errorf("retention: %w", err)
			}
			s.Rows = n
		} else {
			var err error
			first, err = r.deleteStatus(ctx, &s, first)
			if s.Rows > 0 {
				r.log.Info().Str("status", string(st)).Int64("deleted", s.Rows).Int("batches", s.Batches).
					Dur("period", period).Msg("deleted final rows past retention")
			}
			if err != nil {
				rep.Total += s.Rows
				rep.Status = append(rep.Status, s)
				r.count(ctx, "error")
				return rep, err
			}
		}
		rep.Total += s.Rows
		rep.Status = append(rep.Status, s)
	}
	if !dryRun {
		r.count(ctx, "done")
	}
	return rep, nil
}

// deleteStatus deletes the expired rows of s.Status batch by batch; first
// is whether no batch ran yet in this run (no pause before it).
func (r *Retention) deleteStatus(ctx context.Context, s *RetentionStatus, first bool) (bool, error) {
	for {
		if !first {
			if err := pause(ctx, r.cfg.Pause); err != nil {
				return first, err
			}
			ok, err := r.store.AcquireJobLease(ctx, RetentionJob, r.cfg.Owner, r.leaseTTL())
			if err != nil {
				return first, fmt.Errorf("retention: renew the lease: %w", err)
			}
			if !ok {
				return first, errors.New("retention: lost the job lease to another runner")
			}
		}
		first = false
		n, err := r.store.DeleteExpired(ctx, s.Status, s.Before, r.cfg.Batch)
		if err != nil {
			return first, fmt.Errorf("retention: %w", err)
		}
		s.Batches++
		s.Rows += n
		if r.m != nil && n > 0 {
			r.m.RetentionDeleted.WithLabelValues(string(s.Status)).Add(float64(n))
		}
		if n < int64(r.cfg.Batch) {
			return first, nil
		}
	}
}

// count counts a run by result; a run stopped by shutdown (ctx ended) is
// no failure and is not counted as one.
func (r *Retention) count(ctx context.Context, result string) {
	if result == "error" && ctx.Err() != nil {
		return
	}
	if r.m != nil {
		r.m.RetentionRuns.WithLabelValues(result).Inc()
	}
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
