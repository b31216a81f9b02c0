package processing_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

// fakeReconcileStore hands out unknown rows and records settlements.
type fakeReconcileStore struct {
	mu       sync.Mutex
	rows     []payment.Record
	ok       bool
	settled  []payment.Completion
	settleAt []time.Time
	backoffs []time.Duration
}

func (s *fakeReconcileStore) DueUnknown(_ context.Context, limit int, backoff func(int) time.Duration) ([]payment.Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.rows {
		s.backoffs = append(s.backoffs, backoff(i+1))
	}
	return s.rows[:min(limit, len(s.rows))], s.ok, nil
}

func (s *fakeReconcileStore) Settle(_ context.Context, c payment.Completion, from payment.Status, at time.Time) (payment.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if from != payment.StatusUnknown {
		return payment.Record{}, errors.New("settle from " + string(from))
	}
	s.settled = append(s.settled, c)
	s.settleAt = append(s.settleAt, at)
	return payment.Record{IdempotencyKey: c.Key, Status: c.Status}, nil
}

func (s *fakeReconcileStore) UnknownStats(context.Context) (int64, time.Duration, error) {
	return int64(len(s.rows) - len(s.settled)), time.Minute, nil
}

func TestReconcileOnce(t *testing.T) {
	t.Parallel()
	row := func(key string) payment.Record {
		return payment.Record{IdempotencyKey: key, PaymentID: "pay_" + key, AmountMinor: 100, Currency: "EUR",
			Status: payment.StatusUnknown, Attempts: 3, Gateway: testGateway, Ambiguous: true}
	}
	store := &fakeReconcileStore{ok: true, rows: []payment.Record{row("charged"), row("not-charged"), row("down")}}
	gw := newFakeGateway()
	gw.lookups = []lookupStep{
		{res: payment.LookupResult{Found: true, ChargeID: "ch_9"}},
		{},
		{err: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 503}},
	}
	var (
		announced     []payment.Outcome
		settledBefore []int // rows settled when each announcement went out
	)
	announce := func(_ context.Context, o payment.Outcome) error {
		store.mu.Lock()
		settledBefore = append(settledBefore, len(store.settled))
		store.mu.Unlock()
		announced = append(announced, o)
		return nil
	}
	m := telemetry.New(prometheus.NewRegistry())
	r := processing.NewReconciler(processing.ReconcilerConfig{Interval: time.Second, Limit: 10,
		BackoffBase: time.Second, BackoffMax: time.Minute, LookupTimeout: time.Second}, store, gw, announce, zerolog.Nop(), m)

	n, err := r.ReconcileOnce(t.Context())
	require.Equal(t, 2, n)
	require.ErrorContains(t, err, "look up down")
	require.Equal(t, []string{"charged", "not-charged", "down"}, gw.lookupCalls())
	require.Len(t, store.settled, 2)
	for i, want := range []payment.Attempt{
		{Kind: payment.AttemptLookup, Class: payment.AttemptClassOK, Result: payment.LookupFound, ChargeID: "ch_9", Gateway: "fakegw"},
		{Kind: payment.AttemptLookup, Class: payment.AttemptClassOK, Result: payment.LookupNotFound, Gateway: "fakegw"},
	} {
		c := &store.settled[i]
		require.Equal(t, processing.SettleOwnerReconciler, c.Owner)
		require.Len(t, c.Attempts, 1, "the settling lookup is recorded with the settlement")
		require.False(t, c.Attempts[0].StartedAt.IsZero())
		c.Attempts[0].StartedAt, c.Attempts[0].Duration = time.Time{}, 0
		require.Equal(t, want, c.Attempts[0])
		c.Owner, c.Attempts = "", nil
	}
	require.Equal(t, payment.Completion{Key: "charged", Attempt: 3, Status: payment.StatusSucceeded,
		Gateway: testGateway, GatewayChargeID: "ch_9", Ambiguous: true}, store.settled[0])
	require.Equal(t, payment.Completion{Key: "not-charged", Attempt: 3, Status: payment.StatusFailed,
		Gateway: testGateway, ErrorCode: payment.ErrorCodeExhausted, Ambiguous: true}, store.settled[1])
	require.Len(t, announced, 2, "the unanswered one is not announced")
	require.Equal(t, []int{0, 1}, settledBefore, "each outcome is announced before it is recorded")
	require.Equal(t, payment.StatusSucceeded, announced[0].Status)
	require.Equal(t, "ch_9", announced[0].GatewayChargeID)
	require.True(t, announced[0].CompletedAt.Equal(store.settleAt[0]), "the event and the row carry one completion time")
	require.Equal(t, payment.StatusFailed, announced[1].Status)
	for i, b := range store.backoffs {
		require.Positive(t, b, "backoff %d", i)
		require.LessOrEqual(t, b, time.Minute)
	}
	require.Equal(t, 1.0, counterValue(t, m.Reconciliations.WithLabelValues("succeeded")))
	require.Equal(t, 1.0, counterValue(t, m.Reconciliations.WithLabelValues("failed")))
	require.Equal(t, 1.0, counterValue(t, m.Reconciliations.WithLabelValues("error")))
	require.Equal(t, 1.0, gaugeValue(t, m.UnknownRows))

	// An announcement that fails records nothing: the next round asks again.
	store2 := &fakeReconcileStore{ok: true, rows: []payment.Record{row("k")}}
	r2 := processing.NewReconciler(processing.ReconcilerConfig{Interval: time.Second, Limit: 10,
		BackoffBase: time.Second, BackoffMax: time.Minute, LookupTimeout: time.Second}, store2, newFakeGateway(),
		func(context.Context, payment.Outcome) error { return errors.New("nats down") }, zerolog.Nop(), m)
	_, err = r2.ReconcileOnce(t.Context())
	require.ErrorContains(t, err, "nats down")
	require.Empty(t, store2.settled)

	// Another worker reconciles: nothing to do here.
	idle := &fakeReconcileStore{rows: []payment.Record{row("x")}}
	r3 := processing.NewReconciler(processing.ReconcilerConfig{Interval: time.Second, Limit: 10,
		BackoffBase: time.Second, BackoffMax: time.Minute, LookupTimeout: time.Second}, idle, newFakeGateway(), announce, zerolog.Nop(), m)
	n, err = r3.ReconcileOnce(t.Context())
	require.NoError(t, err)
	require.Zero(t, n)
}
