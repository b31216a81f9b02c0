package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/defaults"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/store"
	"github.com/paystream/paystream/telemetry"
)

func TestMain(m *testing.M) {
	pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true})
}

// fleet is one test's paystream: embedded JetStream, a fresh database, the
// gateway simulator behind a charge counter, and in-process workers built
// as cmd/worker builds them (consumer → processing → store batcher, HTTP
// gateway client).
type fleet struct {
	t     *testing.T
	nats  *natstest.Server
	dbURL string
	pool  *pgxpool.Pool
	sim   *sim.Server
	gwURL string
	nc    *nats.Conn
	js    jetstream.JetStream
	ccfg  consumer.Config
	pcfg  processing.Config

	mu sync.Mutex
	// chargeIDs are the distinct charge ids the gateway answered per
	// idempotency key: more than one is a double charge, whatever the
	// simulator remembers.
	chargeIDs map[string]map[string]bool

	workers []*worker
}

func newFleet(t *testing.T, simCfg sim.Config) *fleet {
	t.Helper()
	f := &fleet{t: t, nats: natstest.New(t), dbURL: pgtest.NewDatabase(t), chargeIDs: map[string]map[string]bool{}}
	pool, err := pgxpool.New(context.Background(), f.dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	f.pool = pool
	f.sim = sim.New(simCfg, zerolog.Nop(), prometheus.NewRegistry())
	srv := httptest.NewServer(http.HandlerFunc(f.countCharges))
	t.Cleanup(srv.Close)
	f.gwURL = srv.URL

	f.ccfg, f.pcfg = defaults.Consumer(), defaults.Processing("")
	f.ccfg.FetchMaxWait = 250 * time.Millisecond
	f.ccfg.MaxDeliver, f.pcfg.MaxDeliver = 3, 3
	f.ccfg.Concurrency = 8
	f.ccfg.ShutdownTimeout = 5 * time.Second
	f.pcfg.RetryBackoff, f.pcfg.RetryBackoffMax = 20*time.Millisecond, 100*time.Millisecond
	f.ccfg.RetryBackoff, f.ccfg.RetryBackoffMax = f.pcfg.RetryBackoff, f.pcfg.RetryBackoffMax
	// The outage must exhaust deliveries, not open the breaker.
	f.pcfg.BreakerFailures = 1 << 30

	f.nc, err = nats.Connect(f.nats.URL())
	require.NoError(t, err)
	t.Cleanup(f.nc.Close)
	f.js, err = jetstream.New(f.nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, consumer.Provision(ctx, f.js, f.ccfg))
	return f
}

// countCharges serves the simulator and records the charge id of every
// successful charge answer by key.
func (f *fleet) countCharges(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/charges" {
		f.sim.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	f.sim.ServeHTTP(rec, r)
	if rec.Code == http.StatusOK || rec.Code == http.StatusCreated {
		var ans struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(rec.Body.Bytes(), &ans) == nil && ans.ID != "" {
			key := r.Header.Get("Idempotency-Key")
			f.mu.Lock()
			if f.chargeIDs[key] == nil {
				f.chargeIDs[key] = map[string]bool{}
			}
			f.chargeIDs[key][ans.ID] = true
			f.mu.Unlock()
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// charges returns how many distinct charges the gateway made under key.
func (f *fleet) charges(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.chargeIDs[key])
}

// worker is one in-process worker of a fleet.
type worker struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (f *fleet) startWorker(name string) *worker {
	f.t.Helper()
	nc, err := nats.Connect(f.nats.URL())
	require.NoError(f.t, err)
	js, err := jetstream.New(nc)
	require.NoError(f.t, err)
	gw, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: f.gwURL, Timeout: 2 * time.Second})
	require.NoError(f.t, err)
	m := telemetry.New(prometheus.NewRegistry())
	b := store.NewBatcher(store.New(f.pool), store.BatcherConfig{})
	pcfg := f.pcfg
	pcfg.Owner = name
	proc := processing.New(pcfg, b, gw, zerolog.Nop(), m)
	cons := consumer.New(js, f.ccfg, proc, zerolog.Nop(), m)
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{cancel: cancel, done: make(chan error, 1)}
	bctx, bcancel := context.WithCancel(context.Background())
	var bwg sync.WaitGroup
	bwg.Go(func() { _ = b.Run(bctx) })
	go func() {
		err := cons.Run(ctx)
		bcancel()
		bwg.Wait()
		gw.Close()
		nc.Close()
		w.done <- err
	}()
	f.workers = append(f.workers, w)
	f.t.Cleanup(func() { w.stop(f.t) })
	return w
}

func (w *worker) stop(t *testing.T) {
	w.once.Do(func() {
		w.cancel()
		select {
		case err := <-w.done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop")
		}
	})
}

func (f *fleet) stopWorkers() {
	for _, w := range f.workers {
		w.stop(f.t)
	}
	f.workers = nil
}

func request(id string, amount int64) *payment.Request {
	return &payment.Request{PaymentID: id, MerchantID: "m001", CustomerID: "c42", AmountMinor: amount,
		Currency: "EUR", PaymentMethod: "pm_card_visa", Description: "order " + id}
}

func (f *fleet) publish(r *payment.Request, msgID string) {
	f.t.Helper()
	body, err := json.Marshal(r)
	require.NoError(f.t, err)
	f.publishRaw("payments.requests."+r.MerchantID, body, msgID)
}

func (f *fleet) publishRaw(subject string, body []byte, msgID string) {
	f.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	_, err := f.js.PublishMsg(context.Background(), m)
	require.NoError(f.t, err)
}

// status returns the status of key's row, "" when there is none.
func (f *fleet) status(key string) string {
	var st string
	err := f.pool.QueryRow(context.Background(), "SELECT status FROM payments WHERE idempotency_key = $1", key).Scan(&st)
	if err != nil {
		return ""
	}
	return st
}

func (f *fleet) waitStatus(want string, keys ...string) {
	f.t.Helper()
	for _, k := range keys {
		require.Eventually(f.t, func() bool { return f.status(k) == want }, 30*time.Second, 20*time.Millisecond,
			"%s should become %s, is %q", k, want, f.status(k))
	}
}

// dlqCount returns how many dead letters the stream holds on subject.
func (f *fleet) dlqCount(reason string) uint64 {
	st, err := f.js.Stream(context.Background(), f.ccfg.DLQStream)
	require.NoError(f.t, err)
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter("payments.dlq."+reason))
	require.NoError(f.t, err)
	return info.State.Subjects["payments.dlq."+reason]
}

func (f *fleet) streamMsgs(name string) uint64 {
	st, err := f.js.Stream(context.Background(), name)
	require.NoError(f.t, err)
	info, err := st.Info(context.Background())
	require.NoError(f.t, err)
	return info.State.Msgs
}

// waitIdle waits until the workers' consumer has nothing pending or
// unacknowledged.
func (f *fleet) waitIdle() {
	f.t.Helper()
	require.Eventually(f.t, func() bool {
		c, err := f.js.Consumer(context.Background(), f.ccfg.Stream, f.ccfg.Consumer)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, 30*time.Second, 20*time.Millisecond)
}

// ctl runs paystreamctl against the fleet and returns its exit status,
// stdout and stderr.
func (f *fleet) ctl(args ...string) (int, string, string) {
	f.t.Helper()
	return f.ctlEnv(nil, args...)
}

// ctlEnv is ctl with more PAYSTREAM_* variables.
func (f *fleet) ctlEnv(extra map[string]string, args ...string) (int, string, string) {
	f.t.Helper()
	var stdout, stderr bytes.Buffer
	vars := map[string]string{
		"PAYSTREAM_NATS_URL":     f.nats.URL(),
		"PAYSTREAM_DATABASE_URL": f.dbURL,
	}
	for k, v := range extra {
		vars[k] = v
	}
	e := &env{
		lookupEnv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		stdout:    &stdout, stderr: &stderr, user: "tester",
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := run(ctx, args, e)
	return code, stdout.String(), stderr.String()
}

// ctlJSON runs paystreamctl with --json and decodes its output into v.
func ctlJSON[T any](f *fleet, wantCode int, args ...string) T {
	f.t.Helper()
	code, out, errOut := f.ctl(append(args, "--json")...)
	require.Equal(f.t, wantCode, code, "paystreamctl %v: stderr %s", args, errOut)
	var v T
	require.NoError(f.t, json.Unmarshal([]byte(out), &v), "paystreamctl %v printed %q", args, out)
	return v
}

func seqArg(seqs ...uint64) string {
	var b bytes.Buffer
	for i, s := range seqs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, s)
	}
	return b.String()
}
