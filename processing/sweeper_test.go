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

// published is one republish call.
type published struct {
	Subject string
	Body    string
	MsgID   string
}

// fakeSweepStore scripts find and records republish and delete calls.
type fakeSweepStore struct {
	mu         sync.Mutex
	rows       []payment.Stuck
	ok         bool
	findErr    error
	publishErr map[string]error // by msg id

	finds    []findCall
	publish  []published
	deletes  []deleteCall
	findSeen chan struct{} // one value per find call, when there is room
}

type findCall struct {
	grace time.Duration
	limit int
}

type deleteCall struct {
	before time.Time
	limit  int
}

func (s *fakeSweepStore) find(_ context.Context, grace time.Duration, limit int) ([]payment.Stuck, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finds = append(s.finds, findCall{grace, limit})
	if s.findSeen != nil {
		select {
		case s.findSeen <- struct{}{}:
		default:
		}
	}
	if s.findErr != nil {
		return nil, false, s.findErr
	}
	if !s.ok {
		return nil, false, nil
	}
	return s.rows, true, nil
}

func (s *fakeSweepStore) republish(_ context.Context, subject string, body []byte, msgID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.publishErr[msgID]; err != nil {
		return err
	}
	s.publish = append(s.publish, published{subject, string(body), msgID})
	return nil
}

func (s *fakeSweepStore) delete(_ context.Context, before time.Time, limit int) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deletes = append(s.deletes, deleteCall{before, limit})
	return 3, nil
}

func (s *fakeSweepStore) snapshot() (finds []findCall, pubs []published, dels []deleteCall) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]findCall(nil), s.finds...), append([]published(nil), s.publish...), append([]deleteCall(nil), s.deletes...)
}

var stuckRows = []payment.Stuck{
	{Key: "k-a", PaymentID: "pay_a", Attempts: 1, Subject: "payments.requests.m_1", Body: []byte(`{"a":1}`)},
	{Key: "k-b", PaymentID: "pay_b", Attempts: 2, Subject: "payments.requests.m_2", Body: []byte(`{"b":2}`)},
	{Key: "k-c", PaymentID: "pay_c", Attempts: 7, Subject: "payments.requests.m_1", Body: []byte(`{"c":3}`)},
}

// testSweeperConfig is the sweeper configuration of the tests: the worker's
// default interval (30s) and grace (5m), the package's default limit, no
// retention.
func testSweeperConfig() processing.SweeperConfig {
	return processing.SweeperConfig{Interval: 30 * time.Second, Grace: 5 * time.Minute}
}

// newTestSweeper returns a Sweeper over s with testSweeperConfig changed by
// tweak (when not nil).
func newTestSweeper(tweak func(*processing.SweeperConfig), s *fakeSweepStore, withDelete bool) (*processing.Sweeper, *telemetry.Metrics) {
	cfg := testSweeperConfig()
	if tweak != nil {
		tweak(&cfg)
	}
	m := telemetry.New(prometheus.NewRegistry())
	var del func(context.Context, time.Time, int) (int64, error)
	if withDelete {
		del = s.delete
	}
	return processing.NewSweeper(cfg, s.find, s.republish, del, zerolog.Nop(), m), m
}

func TestSweepOnce(t *testing.T) {
	t.Parallel()
	errPub, errPub2, errFind := errors.New("publish timeout"), errors.New("no responders"), errors.New("db down")
	all := []published{
		{"payments.requests.m_1", `{"a":1}`, "sweep-k-a-1"},
		{"payments.requests.m_2", `{"b":2}`, "sweep-k-b-2"},
		{"payments.requests.m_1", `{"c":3}`, "sweep-k-c-7"},
	}
	tests := []struct {
		name      string
		cfg       func(*processing.SweeperConfig)
		store     *fakeSweepStore
		wantN     int
		wantErrs  []error
		wantInErr []string
		wantPub   []published
		wantFind  findCall
	}{
		{
			name:     "republishes every stuck row",
			store:    &fakeSweepStore{rows: stuckRows, ok: true},
			wantN:    3,
			wantPub:  all,
			wantFind: findCall{5 * time.Minute, 500},
		},
		{
			name:     "passes grace and limit",
			cfg:      func(c *processing.SweeperConfig) { c.Grace, c.Limit = 5*time.Second, 7 },
			store:    &fakeSweepStore{rows: stuckRows[:1], ok: true},
			wantN:    1,
			wantPub:  all[:1],
			wantFind: findCall{5 * time.Second, 7},
		},
		{
			name:     "nothing stuck",
			store:    &fakeSweepStore{ok: true},
			wantFind: findCall{5 * time.Minute, 500},
		},
		{
			name:     "another worker holds the sweep lock",
			store:    &fakeSweepStore{rows: stuckRows, ok: false},
			wantFind: findCall{5 * time.Minute, 500},
		},
		{
			name:      "find error",
			store:     &fakeSweepStore{rows: stuckRows, ok: true, findErr: errFind},
			wantErrs:  []error{errFind},
			wantInErr: []string{"find stuck payments"},
			wantFind:  findCall{5 * time.Minute, 500},
		},
		{
			name: "failed republishes are joined and the rest still go out",
			store: &fakeSweepStore{rows: stuckRows, ok: true,
				publishErr: map[string]error{"sweep-k-a-1": errPub, "sweep-k-c-7": errPub2}},
			wantN:     1,
			wantErrs:  []error{errPub, errPub2},
			wantInErr: []string{"republish k-a", "republish k-c"},
			wantPub:   all[1:2],
			wantFind:  findCall{5 * time.Minute, 500},
		},
		{
			name: "rows without a stored request are reported, not republished",
			store: &fakeSweepStore{ok: true, rows: []payment.Stuck{
				{Key: "k-x", PaymentID: "pay_x", Attempts: 1, Subject: "payments.requests.m_1"},
				stuckRows[1],
				{Key: "k-y", PaymentID: "pay_y", Attempts: 1, Body: []byte(`{}`)},
			}},
			wantN:     1,
			wantInErr: []string{"republish k-x: no stored request", "republish k-y: no stored request"},
			wantPub:   all[1:2],
			wantFind:  findCall{5 * time.Minute, 500},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sw, m := newTestSweeper(tt.cfg, tt.store, true)

			n, err := sw.SweepOnce(t.Context())
			require.Equal(t, tt.wantN, n)
			if len(tt.wantErrs)+len(tt.wantInErr) == 0 {
				require.NoError(t, err)
			}
			for _, want := range tt.wantErrs {
				require.ErrorIs(t, err, want)
			}
			for _, want := range tt.wantInErr {
				require.ErrorContains(t, err, want)
			}
			finds, pubs, dels := tt.store.snapshot()
			require.Equal(t, []findCall{tt.wantFind}, finds)
			require.Equal(t, tt.wantPub, pubs)
			require.Empty(t, dels, "SweepOnce does not delete")
			require.InDelta(t, float64(tt.wantN), counterValue(t, m.Swept), 0)
		})
	}
}

func TestSweeperRun(t *testing.T) {
	t.Parallel()

	t.Run("sweeps and deletes every interval until cancelled", func(t *testing.T) {
		t.Parallel()
		store := &fakeSweepStore{rows: stuckRows[:1], ok: true, findSeen: make(chan struct{}, 1)}
		sw, _ := newTestSweeper(func(c *processing.SweeperConfig) { c.Interval, c.Retention = time.Millisecond, time.Hour }, store, true)

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- sw.Run(ctx) }()
		for range 3 {
			<-store.findSeen
		}
		cancel()
		require.NoError(t, <-done)

		finds, pubs, dels := store.snapshot()
		require.GreaterOrEqual(t, len(finds), 3)
		require.GreaterOrEqual(t, len(pubs), 3)
		require.GreaterOrEqual(t, len(dels), 2, "each sweep is followed by a retention pass")
		for _, d := range dels {
			require.Equal(t, 10_000, d.limit)
			require.WithinRange(t, d.before, start.Add(-time.Hour), time.Now().Add(-time.Hour))
		}
	})

	t.Run("retention off", func(t *testing.T) {
		t.Parallel()
		for _, withDelete := range []bool{true, false} {
			store := &fakeSweepStore{ok: true, findSeen: make(chan struct{}, 1)}
			sw, _ := newTestSweeper(func(c *processing.SweeperConfig) { c.Interval = time.Millisecond }, store, withDelete)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- sw.Run(ctx) }()
			for range 3 {
				<-store.findSeen
			}
			cancel()
			require.NoError(t, <-done)
			_, _, dels := store.snapshot()
			require.Empty(t, dels)
		}
	})

	t.Run("keeps sweeping after errors", func(t *testing.T) {
		t.Parallel()
		store := &fakeSweepStore{findErr: errors.New("db down"), findSeen: make(chan struct{}, 1)}
		sw, _ := newTestSweeper(func(c *processing.SweeperConfig) { c.Interval = time.Millisecond }, store, false)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- sw.Run(ctx) }()
		for range 3 {
			<-store.findSeen
		}
		cancel()
		require.NoError(t, <-done)
	})

	t.Run("returns at once when cancelled before the first interval", func(t *testing.T) {
		t.Parallel()
		store := &fakeSweepStore{ok: true}
		sw, _ := newTestSweeper(func(c *processing.SweeperConfig) { c.Interval = time.Hour }, store, true)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- sw.Run(ctx) }()
		cancel()
		require.NoError(t, <-done)
		finds, _, _ := store.snapshot()
		require.Empty(t, finds)
	})
}

func TestConstructorsRequireDependencies(t *testing.T) {
	t.Parallel()
	m := telemetry.New(prometheus.NewRegistry())
	store := &fakeSweepStore{}
	require.Panics(t, func() { processing.NewSweeper(testSweeperConfig(), nil, store.republish, nil, zerolog.Nop(), m) })
	require.Panics(t, func() { processing.NewSweeper(testSweeperConfig(), store.find, nil, nil, zerolog.Nop(), m) })
	require.Panics(t, func() {
		processing.NewSweeper(testSweeperConfig(), store.find, store.republish, nil, zerolog.Nop(), nil)
	})

	gw, claims := newFakeGateway(), &fakeClaims{}
	require.Panics(t, func() { processing.New(processing.Config{}, claims, gw, zerolog.Nop(), m) }, "Owner is required")
	require.Panics(t, func() { processing.New(testConfig(), nil, gw, zerolog.Nop(), m) })
	require.Panics(t, func() { processing.New(testConfig(), claims, nil, zerolog.Nop(), m) })
	require.Panics(t, func() { processing.New(testConfig(), claims, gw, zerolog.Nop(), nil) })
}
