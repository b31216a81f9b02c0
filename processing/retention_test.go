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

// fakeRetentionStore holds expired rows by status and records calls.
type fakeRetentionStore struct {
	mu       sync.Mutex
	expired  map[payment.Status]int64
	deletes  []payment.Status
	leases   int
	released int
	holder   string // another owner holding the lease; "" for none
	loseAt   int    // the lease is lost at this acquisition (1-based); 0 never
	err      error
}

func (s *fakeRetentionStore) DeleteExpired(_ context.Context, st payment.Status, _ time.Time, limit int) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	s.deletes = append(s.deletes, st)
	n := min(int64(limit), s.expired[st])
	s.expired[st] -= n
	return n, nil
}

func (s *fakeRetentionStore) CountExpired(_ context.Context, st payment.Status, _ time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expired[st], nil
}

func (s *fakeRetentionStore) AcquireJobLease(_ context.Context, name, owner string, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leases++
	if name != processing.RetentionJob || owner == "" || ttl <= 0 {
		return false, errors.New("bad lease call")
	}
	return s.holder == "" && s.leases != s.loseAt, nil
}

func (s *fakeRetentionStore) ReleaseJobLease(context.Context, string, string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released++
	return nil
}

func newRetention(t *testing.T, st *fakeRetentionStore) (*processing.Retention, *telemetry.Metrics) {
	t.Helper()
	m := telemetry.New(prometheus.NewRegistry())
	cfg := processing.RetentionConfig{
		Periods: map[payment.Status]time.Duration{payment.StatusSucceeded: 72 * time.Hour, payment.StatusFailed: 240 * time.Hour,
			payment.StatusDeclined: -1},
		Batch: 2, Pause: time.Millisecond, Owner: "w1",
	}
	return processing.NewRetention(cfg, st, zerolog.Nop(), m), m
}

func TestRetentionRunsInBatches(t *testing.T) {
	t.Parallel()
	st := &fakeRetentionStore{expired: map[payment.Status]int64{"succeeded": 5, "declined": 7, "failed": 2}}
	r, m := newRetention(t, st)

	dry, err := r.Run(t.Context(), true)
	require.NoError(t, err)
	require.True(t, dry.Ran)
	require.EqualValues(t, 7, dry.Total)
	require.Zero(t, st.leases, "a dry run takes no lease")
	require.Empty(t, st.deletes)

	rep, err := r.Run(t.Context(), false)
	require.NoError(t, err)
	require.True(t, rep.Ran)
	require.EqualValues(t, 7, rep.Total)
	require.Equal(t, []payment.Status{"succeeded", "succeeded", "succeeded", "failed", "failed"}, st.deletes,
		"batches of 2 until a short one; declined is kept for ever")
	require.Len(t, rep.Status, 3)
	require.Equal(t, 3, rep.Status[0].Batches)
	require.True(t, rep.Status[1].KeptForever)
	require.Equal(t, "-1", rep.Status[1].Period)
	require.Equal(t, 2, rep.Status[2].Batches, "a full batch, then an empty one")
	require.EqualValues(t, 7, st.expired["declined"])
	require.Equal(t, 5, st.leases, "the lease is taken, then renewed before every further batch")
	require.Equal(t, 1, st.released)
	require.InDelta(t, 5, counterValue(t, m.RetentionDeleted.WithLabelValues("succeeded")), 0)
	require.InDelta(t, 2, counterValue(t, m.RetentionDeleted.WithLabelValues("failed")), 0)
	require.InDelta(t, 1, counterValue(t, m.RetentionRuns.WithLabelValues("done")), 0)
}

func TestRetentionOneRunnerAtATime(t *testing.T) {
	t.Parallel()
	st := &fakeRetentionStore{expired: map[payment.Status]int64{"succeeded": 5}, holder: "w2"}
	r, m := newRetention(t, st)
	rep, err := r.Run(t.Context(), false)
	require.NoError(t, err)
	require.False(t, rep.Ran)
	require.Empty(t, st.deletes)
	require.InDelta(t, 1, counterValue(t, m.RetentionRuns.WithLabelValues("busy")), 0)

	// A lease lost between batches stops the run.
	st = &fakeRetentionStore{expired: map[payment.Status]int64{"succeeded": 5}, loseAt: 2}
	r, m = newRetention(t, st)
	rep, err = r.Run(t.Context(), false)
	require.ErrorContains(t, err, "lost the job lease")
	require.EqualValues(t, 2, rep.Total)
	require.Len(t, st.deletes, 1)
	require.InDelta(t, 1, counterValue(t, m.RetentionRuns.WithLabelValues("error")), 0)
}

func TestRetentionStopsWithTheContext(t *testing.T) {
	t.Parallel()
	st := &fakeRetentionStore{expired: map[payment.Status]int64{"succeeded": 1000}}
	m := telemetry.New(prometheus.NewRegistry())
	r := processing.NewRetention(processing.RetentionConfig{Periods: map[payment.Status]time.Duration{"succeeded": time.Hour},
		Batch: 1, Pause: time.Hour, Owner: "w1"}, st, zerolog.Nop(), m)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := r.Run(ctx, false)
		done <- err
	}()
	require.Eventually(t, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.deletes) == 1
	}, 10*time.Second, time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("retention did not stop during its pause")
	}
	require.Equal(t, 1, st.released, "the lease is released on the way out")
}

func TestRetentionConfigValidate(t *testing.T) {
	t.Parallel()
	err := processing.RetentionConfig{Periods: map[payment.Status]time.Duration{"unknown": time.Hour, "processing": time.Hour}}.Validate()
	for _, w := range []string{`status "unknown"`, `status "processing"`, "batch 0", "owner: required"} {
		require.ErrorContains(t, err, w)
	}
	require.Panics(t, func() {
		processing.NewRetention(processing.RetentionConfig{}, &fakeRetentionStore{}, zerolog.Nop(), nil)
	})
}
