package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/internal/testenv/audit"
	"github.com/paystream/paystream/internal/testenv/localstack"
	"github.com/paystream/paystream/internal/testenv/pgcluster"
	"github.com/paystream/paystream/payment"
)

// asyncLag is how long the asynchronous standby has stopped streaming
// before the primary crashes: the commits of that window exist on the
// primary only, and vanish with it.
const asyncLag = 2 * time.Second

func failoverScenarios() []Scenario {
	return []Scenario{
		{
			Name: "pg-failover-sync", CI: true,
			Doc: "Postgres primary crashes under load; the synchronous standby is promoted; workers follow the multi-host URL",
			prepare: func(ctx context.Context, r *infraRun) error {
				return prepareStandby(ctx, r, true)
			},
			fault: func(ctx context.Context, r *infraRun) error { return failover(ctx, r, false) },
		},
		{
			Name: "pg-failover-async",
			Doc: "Postgres primary crashes under load with an asynchronous standby " + asyncLag.String() + " behind; " +
				"the standby is promoted, the last commits vanish, and the requests of that window are replayed",
			prepare: func(ctx context.Context, r *infraRun) error {
				return prepareStandby(ctx, r, false)
			},
			fault:  func(ctx context.Context, r *infraRun) error { return failover(ctx, r, true) },
			excuse: excuseConflictWinners,
		},
	}
}

// prepareStandby starts a streaming standby of the stack's Postgres and
// points the workers and the auditor at both with a multi-host URL
// (target_session_attrs=read-write).
func prepareStandby(ctx context.Context, r *infraRun, synchronous bool) error {
	primary := r.stack.Postgres()
	standby, err := primary.StartStandby(ctx, pgcluster.StandbyConfig{Synchronous: synchronous})
	if err != nil {
		return err
	}
	r.cleanup = append(r.cleanup, func() { _ = standby.Stop() })
	r.standby = standby
	r.dbURL = pgcluster.MultiHostURL(localstack.DatabaseName, primary, standby)
	mode := "asynchronous"
	if synchronous {
		mode = "synchronous"
	}
	r.logf("standby      port %d, %s streaming replication; workers use %s", standby.Port(), mode, r.dbURL)
	return nil
}

// failover crashes the primary (immediate shutdown, as a lost machine would
// leave it) and promotes the standby. With lag, the standby stops streaming
// asyncLag before, so that the primary's last commits never
// reach it; after the promotion the requests published in that window
// (plus a margin) are published again under new message ids — the
// operator's step after an asynchronous failover (docs/reliability.md) —
// and the rows that vanished are counted.
func failover(ctx context.Context, r *infraRun, lag bool) error {
	primary, standby := r.stack.Postgres(), r.standby
	windowStart := time.Now()
	if lag {
		// Not SIGSTOP of the WAL receiver: what the primary sent meanwhile
		// would wait in the socket buffer and arrive after all.
		if err := standby.StopStreaming(ctx); err != nil {
			return err
		}
		r.logf("standby stopped streaming: it falls behind for %s", asyncLag)
		if !sleep(ctx, asyncLag) {
			return ctx.Err()
		}
	}
	r.begin("crash the Postgres primary (immediate shutdown, pid %d)", primary.PID())
	crashAt := time.Now()
	if err := primary.Crash(ctx); err != nil {
		return err
	}
	// An operator's (or a failover manager's) reaction time.
	if !sleep(ctx, time.Second) {
		return ctx.Err()
	}
	if err := standby.Promote(ctx); err != nil {
		return fmt.Errorf("chaos: promote the standby: %w", err)
	}
	r.end("standby promoted %.1fs after the crash", time.Since(crashAt).Seconds())
	if !lag {
		return nil
	}
	vanished, err := vanishedRows(ctx, r)
	if err != nil {
		return err
	}
	r.figure("vanished", vanished)
	n, err := replaySince(ctx, r, windowStart.Add(-3*time.Second))
	if err != nil {
		return err
	}
	r.figure("replayed", n)
	r.logf("async failover: %d announced payments have no row on the new primary; %d requests of the window published again", vanished, n)
	return nil
}

// vanishedRows counts the payments whose outcome was announced but whose
// row the new primary does not have: commits that never reached the
// standby.
func vanishedRows(ctx context.Context, r *infraRun) (int, error) {
	snap, err := r.audit.Collect(ctx)
	if err != nil {
		return 0, err
	}
	rows := map[string]bool{}
	for _, row := range snap.Rows {
		rows[row.Key] = true
	}
	seen := map[string]bool{}
	n := 0
	for _, m := range snap.Results {
		var o struct {
			Key string `json:"idempotency_key"`
		}
		if json.Unmarshal(m.Data, &o) != nil || o.Key == "" || seen[o.Key] {
			continue
		}
		seen[o.Key] = true
		if !rows[o.Key] {
			n++
		}
	}
	return n, nil
}

// replaySince publishes again, under new message ids, every request the
// requests stream stored since t.
func replaySince(ctx context.Context, r *infraRun, t time.Time) (int, error) {
	s, err := r.js.Stream(ctx, contract.Stream)
	if err != nil {
		return 0, fmt.Errorf("chaos: requests stream: %w", err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t})
	if err != nil {
		return 0, fmt.Errorf("chaos: replay: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("chaos: replay: %w", err)
	}
	last := info.State.LastSeq
	var msgs []loadMsg
	for {
		batch, err := c.FetchNoWait(500)
		if err != nil {
			return 0, fmt.Errorf("chaos: replay: %w", err)
		}
		got, done := 0, false
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return 0, fmt.Errorf("chaos: replay: %w", err)
			}
			if _, err := payment.Decode(m.Subject(), m.Data(), payment.Limits{}); err != nil {
				r.extraInvalid.Add(1) // dead-lettered again: the audit expects it
			}
			msgs = append(msgs, loadMsg{subject: m.Subject(), body: m.Data(), msgID: "failover-replay-" + strconv.FormatUint(md.Sequence.Stream, 10)})
			if md.Sequence.Stream >= last {
				done = true
			}
		}
		if done || got == 0 {
			break
		}
	}
	if err := r.snd.sendBurst(ctx, msgs, 8); err != nil {
		return 0, err
	}
	return len(msgs), nil
}

// excuseConflictWinners takes out of the report the keys that a
// conflicting request won after their row vanished: the key's first
// request was charged and its row lost with the old primary; a later
// request with the same key and another body (a conflict, which the row
// would have dead-lettered) claimed the key afresh, and the gateway refused
// its charge with 422 idempotency_key_reused — no second charge, but the
// row ends failed although the key's money moved, and the first request,
// replayed, is dead-lettered as the conflict. That is what asynchronous
// replication costs (docs/reliability.md); the audit's double-charge and
// lost checks are left untouched. Counted as conflict_won_vanished_key.
func excuseConflictWinners(r *infraRun, snap *audit.Snapshot, rep *audit.Report) {
	var keys []string
	for _, row := range snap.Rows {
		if row.ErrorCode == "idempotency_key_reused" {
			keys = append(keys, row.Key)
			if row.PaymentID != "" && row.PaymentID != row.Key {
				keys = append(keys, row.PaymentID)
			}
		}
	}
	r.figure("conflict_won_vanished_key", countReused(snap))
	if len(keys) == 0 {
		return
	}
	drop := func(list []string) []string {
		out := list[:0]
		for _, e := range list {
			if !slices.ContainsFunc(keys, func(k string) bool { return strings.Contains(e, k) }) {
				out = append(out, e)
			}
		}
		return out
	}
	rep.FalseFailed = drop(rep.FalseFailed)
	rep.WrongDeadLetters = drop(rep.WrongDeadLetters)
	rep.OutcomeProblems = drop(rep.OutcomeProblems)
	rep.ChargeMismatches = drop(rep.ChargeMismatches)
}

func countReused(snap *audit.Snapshot) int {
	n := 0
	for _, row := range snap.Rows {
		if row.ErrorCode == "idempotency_key_reused" {
			n++
		}
	}
	return n
}
