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

	lookupRes   payment.LookupResult
	lookupErr   error
	lookedUp    []string
	settles     []settleCall
	deadLetters []deadLetterCall
	outcomes    []payment.Outcome
}

type findCall struct {
	grace time.Duration
	limit int
}

// deleteCall is one retention run.
type deleteCall struct {
	at time.Time
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

func (s *fakeSweepStore) retain(_ context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deletes = append(s.deletes, deleteCall{at: time.Now()})
	return nil
}

func (s *fakeSweepStore) snapshot() (finds []findCall, pubs []published, dels []deleteCall) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]findCall(nil), s.finds...), append([]published(nil), s.publish...), append([]deleteCall(nil), s.deletes...)
}

// Valid stored requests of the stuck rows.
const (
	bodyA = `{"payment_id":"pay_a","idempotency_key":"k-a","merchant_id":"m_1","amount_minor":100,"currency":"EUR","payment_method":"pm_card_visa"}`
	bodyB = `{"payment_id":"pay_b","idempotency_key":"k-b","merchant_id":"m_2","amount_minor":200,"currency":"EUR","payment_method":"pm_card_visa"}`
	bodyC = `{"payment_id":"pay_c","idempotency_key":"k-c","merchant_id":"m_1","amount_minor":300,"currency":"EUR","payment_method":"pm_card_visa"}`
)

var stuckRows = []payment.Stuck{
	{Key: "k-a", PaymentID: "pay_a", Attempts: 1, Subject: "payments.requests.m_1", Body: []byte(bodyA)},
	{Key: "k-b", PaymentID: "pay_b", Attempts: 2, Subject: "payments.requests.m_2", Body: []byte(bodyB)},
	{Key: "k-c", PaymentID: "pay_c", Attempts: 7, Subject: "payments.requests.m_1", Body: []byte(bodyC)},
}

// settleCall, deadLetterCall and the lookups record what the sweeper did
// with a stored request that no longer validates.
type settleCall struct {
	c    payment.Completion
	from payment.Status
}

type deadLetterCall struct {
	subject, body, msgID string
	reason               payment.DeadLetterReason
}

func (s *fakeSweepStore) settle(_ context.Context, c payment.Completion, from payment.Status, at time.Time) (payment.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settles = append(s.settles, settleCall{c, from})
	return payment.Record{IdempotencyKey: c.Key, Status: c.Status, CompletedAt: at}, nil
}

func (s *fakeSweepStore) deadLetter(_ context.Context, subject string, body []byte, dl processing.DeadLetter, msgID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadLetters = append(s.deadLetters, deadLetterCall{subject, string(body), msgID, dl.Reason})
	return nil
}

func (s *fakeSweepStore) announce(_ context.Context, o payment.Outcome) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outcomes = append(s.outcomes, o)
	return nil
}

func (s *fakeSweepStore) lookup(_ context.Context, key string) (payment.LookupResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookedUp = append(s.lookedUp, key)
	return s.lookupRes, s.lookupErr
}

func (s *fakeSweepStore) deps(withDelete bool) processing.SweeperDeps {
	d := processing.SweeperDeps{FindFunc: s.find, RepublishFunc: s.republish, SettleFunc: s.settle,
		DeadLetterFunc: s.deadLetter, AnnounceFunc: s.announce, LookupFunc: s.lookup}
	if withDelete {
		d.RetainFunc = s.retain
	}
	return d
}

// testSweeperConfig is the sweeper configuration of the tests: the worker's
// default interval (30s) and grace (5m), the package's default limit, no
// retention.
func testSweeperConfig() processing.SweeperConfig {
	return processing.SweeperConfig{Interval: 30 * time.Second, Grace: 5 * time.Minute, LookupTimeout: 10 * time.Second}
}

// newTestSweeper returns a Sweeper over s with testSweeperConfig changed by
// tweak (when not nil).
func newTestSweeper(tweak func(*processing.SweeperConfig), s *fakeSweepStore, withDelete bool) (*processing.Sweeper, *telemetry.Metrics) {
	cfg := testSweeperConfig()
	if tweak != nil {
		tweak(&cfg)
	}
	m := telemetry.New(prometheus.NewRegistry())
	return processing.NewSweeper(cfg, s.deps(withDelete), zerolog.Nop(), m), m
}

func TestSweepOnce(t *testing.T) {
	t.Parallel()
	errPub, errPub2, errFind := errors.New("publish timeout"), errors.New("no responders"), errors.New("db down")
	all := []published{
		{"payments.requests.m_1", bodyA, "sweep-k-a-1"},
		{"payments.requests.m_2", bodyB, "sweep-k-b-2"},
		{"payments.requests.m_1", bodyC, "sweep-k-c-7"},
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
		sw, _ := newTestSweeper(func(c *processing.SweeperConfig) { c.Interval = time.Millisecond }, store, true)

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- sw.Run(ctx) }()
		// A round's find comes before its publishes: the fourth find means
		// three rounds have published (waiting for the third let the
		// cancel cut the third round's publish: 2 for 3 once in CI).
		for range 4 {
			<-store.findSeen
		}
		cancel()
		require.NoError(t, <-done)

		finds, pubs, dels := store.snapshot()
		require.GreaterOrEqual(t, len(finds), 3)
		require.GreaterOrEqual(t, len(pubs), 3)
		require.GreaterOrEqual(t, len(dels), 2, "with a retention interval of 0 each sweep is followed by a retention run")
	})

	t.Run("retention at most every retention interval", func(t *testing.T) {
		t.Parallel()
		store := &fakeSweepStore{ok: true, findSeen: make(chan struct{}, 1)}
		sw, _ := newTestSweeper(func(c *processing.SweeperConfig) { c.Interval, c.RetentionInterval = time.Millisecond, time.Hour }, store, true)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- sw.Run(ctx) }()
		for range 4 {
			<-store.findSeen
		}
		cancel()
		require.NoError(t, <-done)
		_, _, dels := store.snapshot()
		require.Len(t, dels, 1, "the first round runs retention, the next ones wait for the interval")
	})

	t.Run("retention off", func(t *testing.T) {
		t.Parallel()
		store := &fakeSweepStore{ok: true, findSeen: make(chan struct{}, 1)}
		sw, _ := newTestSweeper(func(c *processing.SweeperConfig) { c.Interval = time.Millisecond }, store, false)
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
	for _, drop := range []func(*processing.SweeperDeps){
		func(d *processing.SweeperDeps) { d.FindFunc = nil },
		func(d *processing.SweeperDeps) { d.RepublishFunc = nil },
		func(d *processing.SweeperDeps) { d.SettleFunc = nil },
		func(d *processing.SweeperDeps) { d.DeadLetterFunc = nil },
		func(d *processing.SweeperDeps) { d.AnnounceFunc = nil },
		func(d *processing.SweeperDeps) { d.LookupFunc = nil },
	} {
		deps := store.deps(false)
		drop(&deps)
		require.Panics(t, func() { processing.NewSweeper(testSweeperConfig(), deps, zerolog.Nop(), m) })
	}
	require.Panics(t, func() { processing.NewSweeper(testSweeperConfig(), store.deps(false), zerolog.Nop(), nil) })

	gw, claims := newFakeGateway(), &fakeClaims{}
	require.Panics(t, func() { processing.New(processing.Config{}, claims, gw, zerolog.Nop(), m) }, "Owner is required")
	require.Panics(t, func() { processing.New(testConfig(), nil, gw, zerolog.Nop(), m) })
	require.Panics(t, func() { processing.New(testConfig(), claims, nil, zerolog.Nop(), m) })
	require.Panics(t, func() { processing.New(testConfig(), claims, gw, zerolog.Nop(), nil) })
}

// TestSweepSettlesStoredRequestsThatNoLongerValidate covers
// docs/contract.md §6.9: a stuck row whose stored request a lowered limit now
// refuses is settled once — looked up first, since its lease was lost —
// instead of being re-published for ever.
func TestSweepSettlesStoredRequestsThatNoLongerValidate(t *testing.T) {
	t.Parallel()
	limits := func(c *processing.SweeperConfig) { c.Limits = payment.Limits{MaxAmountMinor: 150} } // bodies B and C ask more
	tests := []struct {
		name       string
		lookupRes  payment.LookupResult
		lookupErr  error
		wantStatus payment.Status // "" when nothing is settled
	}{
		{name: "no charge: failed, invalid, one dead letter", wantStatus: payment.StatusFailed},
		{name: "charged after all: succeeded", lookupRes: payment.LookupResult{Found: true, ChargeID: "ch_9"},
			wantStatus: payment.StatusSucceeded},
		{name: "lookup unanswered: left for the next round", lookupErr: errors.New("gateway down")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			store := &fakeSweepStore{rows: stuckRows, ok: true, lookupRes: tt.lookupRes, lookupErr: tt.lookupErr}
			sw, m := newTestSweeper(limits, store, false)
			n, err := sw.SweepOnce(t.Context())
			require.Equal(t, 1, n, "only the valid request is re-published")
			_, pubs, _ := store.snapshot()
			require.Equal(t, []published{{"payments.requests.m_1", bodyA, "sweep-k-a-1"}}, pubs)
			require.ElementsMatch(t, []string{"k-b", "k-c"}, store.lookedUp)
			if tt.wantStatus == "" {
				require.Error(t, err)
				require.Empty(t, store.settles)
				require.Empty(t, store.deadLetters)
				require.Empty(t, store.outcomes)
				return
			}
			require.NoError(t, err)
			require.Len(t, store.settles, 2)
			require.Len(t, store.outcomes, 2)
			for i, st := range store.settles {
				require.Equal(t, payment.StatusProcessing, st.from)
				require.Equal(t, tt.wantStatus, st.c.Status)
				require.Equal(t, tt.wantStatus, store.outcomes[i].Status)
				require.Equal(t, st.c.Key, store.outcomes[i].IdempotencyKey)
			}
			if tt.wantStatus == payment.StatusFailed {
				require.Equal(t, payment.ErrorCodeInvalid, store.settles[0].c.ErrorCode)
				require.Equal(t, []deadLetterCall{
					{"payments.requests.m_2", bodyB, "sweep-invalid-k-b-2", payment.ReasonInvalid},
					{"payments.requests.m_1", bodyC, "sweep-invalid-k-c-7", payment.ReasonInvalid},
				}, store.deadLetters)
			} else {
				require.Equal(t, "ch_9", store.settles[0].c.GatewayChargeID)
				require.Empty(t, store.deadLetters)
			}
			require.Equal(t, 2.0, counterValue(t, m.SettledInvalid))
		})
	}
}

// TestSweepOnceStopsWithItsContext: a stopping worker's sweep re-publishes
// nothing more; the rows come back after the grace period.
func TestSweepOnceStopsWithItsContext(t *testing.T) {
	t.Parallel()
	store := &fakeSweepStore{rows: stuckRows, ok: true}
	sw, _ := newTestSweeper(nil, store, false)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	n, err := sw.SweepOnce(ctx)
	require.Zero(t, n)
	require.ErrorIs(t, err, context.Canceled)
	_, pubs, _ := store.snapshot()
	require.Empty(t, pubs)
}
