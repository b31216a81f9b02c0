package ops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// OverviewConfig says what the overview reads and how far back it looks.
type OverviewConfig struct {
	// StatusConfig names the streams, the bucket and the thresholds, as for
	// Status; its Window is not used (see Window below).
	StatusConfig
	// Window is how far back outcomes are charted; 0 means one hour. Step
	// is the width of a bucket; 0 means one minute.
	Window, Step time.Duration
	// AttentionLimit is how many stuck and unknown rows are listed; 0
	// means 10.
	AttentionLimit int
	// CountTimeout bounds each exact count of rows by status before its
	// estimate is shown instead; 0 means 200 ms.
	CountTimeout time.Duration
	// OutcomesTimeout bounds the query of the outcomes chart, which reads
	// every row completed in the window; 0 means 2 s. When it passes, the
	// report has no buckets and OutcomesError says why.
	OutcomesTimeout time.Duration
}

// OverviewReport is the console's overview: what Status reports, without
// the full count of the table (estimates by status instead, so that it
// stays cheap on ten million rows and can refresh itself), plus outcomes
// over time and the rows that need an operator.
type OverviewReport struct {
	Healthy bool     `json:"healthy"`
	Reasons []string `json:"reasons"`
	// Time is the database clock (this host's when it does not answer).
	Time time.Time `json:"time"`
	// DatabaseError says why the rows could not be read.
	DatabaseError string           `json:"database_error,omitempty"`
	Consumers     []ConsumerStatus `json:"consumers"`
	// DeadLetters counts the dead letters by reason.
	DeadLetters map[string]uint64 `json:"dead_letters"`
	Workers     []fleet.Heartbeat `json:"workers"`
	// Silent is StatusReport.Silent: each silent worker's silence in
	// seconds; its record is not believed.
	Silent map[string]float64 `json:"silent,omitempty"`
	// Gateways are the gateways' fleet records (budget shares, breaker).
	Gateways []fleet.GatewayRecord `json:"gateways"`
	// Rows counts the rows per status: exactly when few and quick, else
	// the planner's estimate (Count.Estimate).
	Rows map[string]Count `json:"rows"`
	// StuckProcessing and Unknown are exact counts (partial indexes).
	StuckProcessing  int64            `json:"stuck_processing"`
	OldestStuck      time.Duration    `json:"oldest_stuck"`
	Unknown          int64            `json:"unknown"`
	OldestUnknown    time.Duration    `json:"oldest_unknown"`
	StuckAfter       time.Duration    `json:"stuck_after"`
	StuckRows        []AttentionRow   `json:"stuck_rows"`
	UnknownRows      []AttentionRow   `json:"unknown_rows"`
	Outcomes         []Bucket         `json:"outcomes"`
	OutcomeStep      time.Duration    `json:"outcome_step"`
	OutcomesInWindow map[string]int64 `json:"outcomes_in_window"`
	// OutcomesError says why there are no outcomes (too many completions
	// in the window to count within OutcomesTimeout).
	OutcomesError string `json:"outcomes_error,omitempty"`
}

// AttentionRow is a stuck or unknown row as the overview lists it.
type AttentionRow struct {
	PaymentRow
	LeaseOwner     string     `json:"lease_owner,omitempty"`
	LeaseUntil     *time.Time `json:"lease_until,omitempty"`
	ReconcileAfter *time.Time `json:"reconcile_after,omitempty"`
	ReconcileTries int        `json:"reconcile_tries,omitempty"`
}

// Bucket is the outcomes of one interval: rows that became succeeded,
// declined or failed within [Start, Start+step).
type Bucket struct {
	Start     time.Time `json:"start"`
	Succeeded int64     `json:"succeeded"`
	Declined  int64     `json:"declined"`
	Failed    int64     `json:"failed"`
}

// Total is the bucket's outcomes together.
func (b Bucket) Total() int64 { return b.Succeeded + b.Declined + b.Failed }

// Overview gathers the console's overview. st nil, or a database that
// does not answer, leaves the rows out (DatabaseError says why) and reports
// the rest, as Status does.
func Overview(ctx context.Context, st *store.Store, js jetstream.JetStream, cfg OverviewConfig) (OverviewReport, error) {
	if cfg.Window <= 0 {
		cfg.Window = time.Hour
	}
	if cfg.Step <= 0 {
		cfg.Step = time.Minute
	}
	if cfg.AttentionLimit <= 0 {
		cfg.AttentionLimit = 10
	}
	if cfg.CountTimeout <= 0 {
		cfg.CountTimeout = 200 * time.Millisecond
	}
	if cfg.OutcomesTimeout <= 0 {
		cfg.OutcomesTimeout = 2 * time.Second
	}
	r := OverviewReport{Reasons: []string{}, Rows: map[string]Count{}, StuckRows: []AttentionRow{},
		UnknownRows: []AttentionRow{}, Outcomes: []Bucket{}, OutcomeStep: cfg.Step, StuckAfter: cfg.StuckAfter,
		OutcomesInWindow: map[string]int64{}, Time: time.Now().UTC()}
	var dbErr error
	if st == nil {
		dbErr = cfg.DatabaseErr
		if dbErr == nil {
			dbErr = errors.New("no connection")
		}
	} else {
		dbErr = overviewRows(ctx, st, cfg, &r)
	}
	if dbErr != nil {
		if ctx.Err() != nil {
			return r, dbErr
		}
		r.DatabaseError = dbErr.Error()
	}
	var err error
	if r.Consumers, err = consumers(ctx, js, cfg.Stream, r.Time); err != nil {
		return r, err
	}
	if r.DeadLetters, err = deadLetterCounts(ctx, js, cfg.DLQStream, cfg.DLQSubjects); err != nil {
		return r, err
	}
	if r.Workers, err = fleet.List(ctx, js, cfg.WorkersBucket); err != nil {
		return r, err
	}
	if r.Workers == nil {
		r.Workers = []fleet.Heartbeat{}
	}
	if r.Gateways, err = fleet.Gateways(ctx, js, cfg.GatewaysBucket, time.Now()); err != nil {
		return r, err
	}
	beats := beatClock{now: time.Now(), interval: heartbeatInterval(ctx, js, cfg.WorkersBucket)}
	r.Reasons = verdict(r.DatabaseError, r.Workers, r.Gateways, r.StuckProcessing, r.Unknown, r.Consumers, cfg.StatusConfig, beats)
	r.Silent = beats.silent(r.Workers)
	r.Healthy = len(r.Reasons) == 0
	return r, nil
}

func overviewRows(ctx context.Context, st *store.Store, cfg OverviewConfig, r *OverviewReport) error {
	var err error
	if err = st.Ping(ctx); err != nil {
		return err
	}
	counts, err := st.StatusCounts(ctx, store.CountOptions{Timeout: cfg.CountTimeout})
	if err != nil {
		return err
	}
	for s, c := range counts {
		r.Rows[string(s)] = Count{N: c.N, Estimate: c.Estimate}
	}
	if r.StuckProcessing, r.OldestStuck, err = st.StuckStats(ctx, cfg.StuckAfter); err != nil {
		return err
	}
	if r.Unknown, r.OldestUnknown, err = st.UnknownStats(ctx); err != nil {
		return err
	}
	stuck, unknown, err := st.AttentionRows(ctx, cfg.StuckAfter, cfg.AttentionLimit)
	if err != nil {
		return err
	}
	r.StuckRows, r.UnknownRows = attention(stuck), attention(unknown)
	buckets, err := st.Outcomes(ctx, cfg.Window, cfg.Step, cfg.OutcomesTimeout)
	if errors.Is(err, store.ErrTooSlow) {
		r.OutcomesError = fmt.Sprintf("too many payments completed in the last %s to count them within %s: "+
			"see paystream_messages_total in the dashboards", cfg.Window, cfg.OutcomesTimeout)
		err = nil
	}
	if err != nil {
		return err
	}
	for _, b := range buckets {
		ob := Bucket{Start: b.Start, Succeeded: b.ByStatus[payment.StatusSucceeded],
			Declined: b.ByStatus[payment.StatusDeclined], Failed: b.ByStatus[payment.StatusFailed]}
		r.Outcomes = append(r.Outcomes, ob)
		r.OutcomesInWindow["succeeded"] += ob.Succeeded
		r.OutcomesInWindow["declined"] += ob.Declined
		r.OutcomesInWindow["failed"] += ob.Failed
	}
	if len(buckets) > 0 {
		r.Time = buckets[len(buckets)-1].Start.Add(cfg.Step)
	}
	return nil
}

func attention(rows []store.AttentionRow) []AttentionRow {
	out := make([]AttentionRow, 0, len(rows))
	for _, a := range rows {
		out = append(out, AttentionRow{PaymentRow: row(a.Record), LeaseOwner: a.LeaseOwner, LeaseUntil: timePtr(a.LeaseUntil),
			ReconcileAfter: timePtr(a.ReconcileAfter), ReconcileTries: a.ReconcileTries})
	}
	return out
}

// verdict returns why the fleet is degraded, by the rules of Status.
func verdict(dbErr string, workers []fleet.Heartbeat, gateways []fleet.GatewayRecord, stuck, unknown int64, cons []ConsumerStatus, cfg StatusConfig, beats beatClock) []string {
	reasons := []string{}
	reason := func(format string, args ...any) { reasons = append(reasons, fmt.Sprintf(format, args...)) }
	if dbErr != "" {
		reason("database unreachable: %s", dbErr)
	}
	ready, silent := 0, 0
	for _, w := range workers {
		if age := beats.silence(w); age > 0 {
			// Its last record (ready, say) is not believed: a worker
			// cut from NATS cannot write the next one.
			silent++
			reason("%s", silentReason(w, age, beats.interval))
			continue
		}
		if w.Ready {
			ready++
		} else {
			// What the worker's /readyz says: the failing dependency.
			reason("worker %s not ready: %s", w.WorkerID, w.NotReady)
		}
		if w.Breaker == "open" {
			// The worst of the worker's gateways; name the open ones.
			var open []string
			for _, g := range w.Gateways {
				if g.Breaker == "open" {
					open = append(open, g.Gateway)
				}
			}
			if len(w.Gateways) > 1 && len(open) > 0 {
				reason("breaker open on worker %s (gateway %s)", w.WorkerID, strings.Join(open, ", "))
			} else {
				reason("breaker open on worker %s", w.WorkerID)
			}
		}
		for _, g := range w.Gateways {
			if g.Fallback {
				reason("worker %s: gateway %s budget share is the fallback, %.4g/s (the fleet's KV cannot be reached)",
					w.WorkerID, g.Gateway, g.Share)
			}
		}
	}
	for _, g := range gateways {
		if g.Down {
			holder := "none yet"
			if g.Probe != nil {
				holder = g.Probe.Holder
			}
			reason("gateway %s down for the fleet since %s (probing: %s)", g.Gateway, g.DownSince.UTC().Format(time.RFC3339), holder)
		}
	}
	if ready == 0 {
		if silent > 0 {
			reason("no ready worker (%d live, %d of them silent)", len(workers), silent)
		} else {
			reason("no ready worker (%d live)", len(workers))
		}
	}
	if stuck > 0 {
		reason("%d payments stuck in processing (lease ended over %s ago)", stuck, cfg.StuckAfter)
	}
	if unknown > 0 {
		reason("%d payments in unknown", unknown)
	}
	for _, c := range cons {
		if cfg.MaxPending > 0 && c.Pending > cfg.MaxPending {
			reason("consumer %s lags: %d pending (max %d)", c.Name, c.Pending, cfg.MaxPending)
		}
		if cfg.MaxOldest > 0 && c.OldestUnackedSeconds > cfg.MaxOldest.Seconds() {
			reason("consumer %s: oldest unacknowledged message is %s old (max %s)", c.Name,
				(time.Duration(c.OldestUnackedSeconds * float64(time.Second))).Round(time.Second), cfg.MaxOldest)
		}
	}
	return reasons
}
