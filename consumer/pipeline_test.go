package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
)

// simGateway serves a gateway simulator over HTTP and returns it with an
// HTTP gateway client pointed at it and a counter of charge requests.
func simGateway(t *testing.T, cfg sim.Config, timeout time.Duration) (*sim.Server, *gateway.HTTP, *atomic.Int64) {
	t.Helper()
	s := sim.New(cfg, zerolog.Nop(), prometheus.NewRegistry())
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			calls.Add(1)
		}
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	gw, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: srv.URL, Timeout: timeout, Name: "sim"})
	require.NoError(t, err)
	t.Cleanup(gw.Close)
	return s, gw, &calls
}

func TestHappyPathTwoWorkers(t *testing.T) {
	t.Parallel()
	fake := gateway.NewFake(gateway.FakeConfig{Seed: 7})
	s := newStack(t, stackOptions{gw: fake, concurrency: 32})
	const n = 2000
	var declines int
	for i := range n {
		amount := int64(1000 + i)
		if amount%100 == 13 {
			declines++
		}
		s.publishRequest(request(i, amount), fmt.Sprintf("pay_%06d", i))
	}
	w1, w2 := s.startWorker("w1"), s.startWorker("w2")
	s.waitFor("2000 final rows", 60*time.Second, func() bool { return s.finalRows() == n })
	s.waitSettled(30 * time.Second)

	c := s.counts()
	require.Equal(t, n-declines, c[payment.StatusSucceeded])
	require.Equal(t, declines, c[payment.StatusDeclined])
	require.Zero(t, c[payment.StatusProcessing])
	require.Equal(t, n, s.streamCount("PAYMENT_RESULTS"), "one outcome event per final row")
	require.Zero(t, s.streamCount("PAYMENTS_DLQ"))
	st := fake.Stats()
	require.EqualValues(t, n-declines, st.Charges)
	require.Empty(t, st.DoubleCharged)

	// Both workers took part.
	w1.stop(t)
	w2.stop(t)
	for _, w := range []*worker{w1, w2} {
		require.Positive(t, counterSum(t, w, "paystream_messages_total"), "worker %s processed nothing", w.name)
	}
}

func TestDuplicateIsAckedAndReannounced(t *testing.T) {
	t.Parallel()
	gw := &countingGateway{Gateway: gateway.NewFake(gateway.FakeConfig{Seed: 1})}
	s := newStack(t, stackOptions{gw: gw})
	sub, err := s.nc.SubscribeSync("payments.results.>")
	require.NoError(t, err)

	r := request(1, 2500)
	s.publishRequest(r, "first")
	s.startWorker("w1")
	s.waitFor("first outcome", 20*time.Second, func() bool { return s.finalRows() == 1 })
	s.publishRequest(r, "second-id-same-body")
	s.waitSettled(20 * time.Second)

	require.Equal(t, map[payment.Status]int{payment.StatusSucceeded: 1}, s.counts())
	require.EqualValues(t, 1, gw.calls.Load(), "one gateway call")
	// Announced twice on the wire (the duplicate re-announces), stored once
	// thanks to the shared message id.
	var ids []string
	for range 2 {
		m, err := sub.NextMsg(10 * time.Second)
		require.NoError(t, err)
		ids = append(ids, m.Header.Get(nats.MsgIdHdr))
		var o payment.Outcome
		require.NoError(t, json.Unmarshal(m.Data, &o))
		require.Equal(t, "pay_000001", o.PaymentID)
		require.Equal(t, payment.StatusSucceeded, o.Status)
		require.Equal(t, 1, o.Attempts)
		require.Equal(t, "fake", o.Gateway)
		require.NotEmpty(t, o.GatewayChargeID)
	}
	require.Equal(t, []string{"result-pay_000001-succeeded", "result-pay_000001-succeeded"}, ids)
	require.Equal(t, 1, s.streamCount("PAYMENT_RESULTS"))
}

func TestConflictIsDeadLettered(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	r := request(1, 2500)
	s.publishRequest(r, "a")
	s.startWorker("w1")
	s.waitFor("first outcome", 20*time.Second, func() bool { return s.finalRows() == 1 })

	r2 := request(1, 9900) // same payment id, so same effective key; other amount
	s.publishRequest(r2, "b")
	s.waitFor("dead letter", 20*time.Second, func() bool { return s.streamCount("PAYMENTS_DLQ") == 1 })
	dl := s.streamMsgs("PAYMENTS_DLQ")[0]
	require.Equal(t, "payments.dlq.conflict", dl.Subject)
	require.Equal(t, "conflict", dl.Header.Get(consumer.HeaderDLQReason))
	require.Contains(t, dl.Header.Get(consumer.HeaderDLQError), "different")

	var amount int64
	var status string
	require.NoError(t, s.pool.QueryRow(context.Background(),
		`SELECT amount_minor, status FROM payments WHERE idempotency_key = 'pay_000001'`).Scan(&amount, &status))
	require.EqualValues(t, 2500, amount, "original row unchanged")
	require.Equal(t, "succeeded", status)
}

func TestInvalidMessagesAreDeadLetteredOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	valid := func(mut func(m map[string]any)) []byte {
		m := map[string]any{"payment_id": "p1", "merchant_id": "m001", "amount_minor": 100,
			"currency": "USD", "payment_method": "pm_card_visa"}
		mut(m)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	cases := map[string][]byte{
		"not json":          []byte("{nope"),
		"not an object":     []byte(`[1,2]`),
		"float amount":      []byte(`{"payment_id":"p1","merchant_id":"m001","amount_minor":100.5,"currency":"USD","payment_method":"pm_card_visa"}`),
		"exponent amount":   []byte(`{"payment_id":"p1","merchant_id":"m001","amount_minor":1e3,"currency":"USD","payment_method":"pm_card_visa"}`),
		"string amount":     valid(func(m map[string]any) { m["amount_minor"] = "100" }),
		"zero amount":       valid(func(m map[string]any) { m["amount_minor"] = 0 }),
		"negative amount":   valid(func(m map[string]any) { m["amount_minor"] = -5 }),
		"amount over max":   valid(func(m map[string]any) { m["amount_minor"] = 100000001 }),
		"missing payment":   valid(func(m map[string]any) { delete(m, "payment_id") }),
		"bad payment id":    valid(func(m map[string]any) { m["payment_id"] = "p 1" }),
		"long payment id":   valid(func(m map[string]any) { m["payment_id"] = strings.Repeat("p", 65) }),
		"bad key":           valid(func(m map[string]any) { m["idempotency_key"] = "has space" }),
		"missing merchant":  valid(func(m map[string]any) { delete(m, "merchant_id") }),
		"merchant mismatch": valid(func(m map[string]any) { m["merchant_id"] = "m002" }),
		"long customer":     valid(func(m map[string]any) { m["customer_id"] = strings.Repeat("c", 65) }),
		"lower currency":    valid(func(m map[string]any) { m["currency"] = "usd" }),
		"XXX currency":      valid(func(m map[string]any) { m["currency"] = "XXX" }),
		"XAU currency":      valid(func(m map[string]any) { m["currency"] = "XAU" }),
		"unknown currency":  valid(func(m map[string]any) { m["currency"] = "ABC" }),
		"missing method":    valid(func(m map[string]any) { delete(m, "payment_method") }),
		"long method":       valid(func(m map[string]any) { m["payment_method"] = strings.Repeat("x", 129) }),
		"card in method":    valid(func(m map[string]any) { m["payment_method"] = "4242424242424242" }),
		"card in desc":      valid(func(m map[string]any) { m["description"] = "card 4111-1111-1111-1111 thanks" }),
		"card in metadata":  valid(func(m map[string]any) { m["metadata"] = map[string]string{"note": "5555 5555 5555 4444"} }),
		"long description":  valid(func(m map[string]any) { m["description"] = strings.Repeat("d", 501) }),
		"too many metadata": valid(func(m map[string]any) {
			md := map[string]string{}
			for i := range 21 {
				md[fmt.Sprintf("k%d", i)] = "v"
			}
			m["metadata"] = md
		}),
		"non-string metadata": valid(func(m map[string]any) { m["metadata"] = map[string]any{"k": 1} }),
		"bad created_at":      valid(func(m map[string]any) { m["created_at"] = "yesterday" }),
		"too large":           valid(func(m map[string]any) { m["description"] = strings.Repeat("d", 66000) }),
		"card across the cut": cardAcrossCut(),
	}
	for name, body := range cases {
		s.publish("payments.requests.m001", body, "invalid-"+name)
	}
	s.startWorker("w1")
	s.waitFor("every invalid message dead-lettered", 30*time.Second,
		func() bool { return s.streamCount("PAYMENTS_DLQ") == len(cases) })
	s.waitSettled(20 * time.Second)

	for _, dl := range s.streamMsgs("PAYMENTS_DLQ") {
		require.Equal(t, "payments.dlq.invalid", dl.Subject)
		require.Equal(t, "invalid", dl.Header.Get(consumer.HeaderDLQReason))
		require.NotEmpty(t, dl.Header.Get(consumer.HeaderDLQError))
		require.Equal(t, "1", dl.Header.Get(consumer.HeaderDeliveries), "never redelivered")
		require.Equal(t, "payments.requests.m001", dl.Header.Get(consumer.HeaderOriginalSubject))
		require.NotEmpty(t, dl.Header.Get(consumer.HeaderStreamSeq))
		require.NotContains(t, string(dl.Data), "411111", "a card cut by the truncation is masked too")
		for _, card := range []string{"4242424242424242", "4111-1111-1111-1111", "5555 5555 5555 4444"} {
			require.NotContains(t, string(dl.Data), card, "card number in a dead letter body")
			require.NotContains(t, dl.Header.Get(consumer.HeaderDLQError), card)
		}
		if strings.Contains(string(dl.Data), "****") {
			require.Equal(t, "true", dl.Header.Get(consumer.HeaderRedacted))
		}
		if len(dl.Data) == 4096 {
			require.Equal(t, "true", dl.Header.Get(consumer.HeaderTruncated))
		}
	}
	require.Empty(t, s.counts(), "no row for an invalid request")
}

func TestGatewayTroubleIsRetriedUntilSuccess(t *testing.T) {
	t.Parallel()
	srv, gw, calls := simGateway(t, sim.Config{ErrorRate: 1, Seed: 3}, 0)
	s := newStack(t, stackOptions{gw: gw, maxDeliver: 20, failures: 1000})
	const n = 50
	for i := range n {
		s.publishRequest(request(i, 1000+10*int64(i)), "")
	}
	s.startWorker("w1")
	s.waitFor("retries under 5xx", 20*time.Second, func() bool { return calls.Load() >= 2*n })
	require.Zero(t, s.finalRows(), "nothing final while the gateway fails")
	srv.SetConfig(sim.Config{})
	s.waitFor("all succeeded", 60*time.Second, func() bool { return s.counts()[payment.StatusSucceeded] == n })
	s.waitSettled(20 * time.Second)
	require.Zero(t, s.streamCount("PAYMENTS_DLQ"))
	require.EqualValues(t, n, srv.Stats().Charges)
}

// TestGatewayDownIsExhausted: a gateway that answers 5xx to every charge and
// every lookup leaves a payment whose deliveries ran out unknown — its
// attempts may have charged — dead-lettered exhausted and not announced;
// once the gateway answers again, the reconciler looks it up over HTTP and
// settles it failed, announced once (docs/contract.md §6.8).
func TestGatewayDownIsExhausted(t *testing.T) {
	t.Parallel()
	srv, gw, calls := simGateway(t, sim.Config{ErrorRate: 1, Seed: 3}, 0)
	s := newStack(t, stackOptions{gw: gw, maxDeliver: 3, failures: 1000})
	s.publishRequest(request(1, 1000), "")
	s.startWorker("w1")
	s.waitFor("dead letter", 30*time.Second, func() bool { return s.streamCount("PAYMENTS_DLQ") == 1 })
	s.waitSettled(20 * time.Second)

	require.Equal(t, map[payment.Status]int{payment.StatusUnknown: 1}, s.counts())
	var attempts int
	require.NoError(t, s.pool.QueryRow(context.Background(), `SELECT attempts FROM payments`).Scan(&attempts))
	require.Equal(t, 3, attempts)
	require.EqualValues(t, 3, calls.Load(), "one charge per delivery")
	dl := s.streamMsgs("PAYMENTS_DLQ")[0]
	require.Equal(t, "payments.dlq.exhausted", dl.Subject)
	require.Equal(t, "3", dl.Header.Get(consumer.HeaderDeliveries))
	require.Zero(t, s.streamCount("PAYMENT_RESULTS"), "unknown is not announced")

	srv.SetConfig(sim.Config{})
	s.newRescuer(time.Minute, payment.Limits{}).run(t)
	s.waitFor("settled", 30*time.Second, func() bool { return s.counts()[payment.StatusFailed] == 1 })
	status, _, code := s.row("pay_000001")
	require.Equal(t, payment.StatusFailed, status)
	require.Equal(t, "exhausted", code)
	require.Zero(t, srv.Stats().Charges, "failed: no money moved")
	res := s.streamMsgs("PAYMENT_RESULTS")
	require.Len(t, res, 1)
	require.Equal(t, "payments.results.failed", res[0].Subject)
}

func TestDeclineKeepsBreakerClosed(t *testing.T) {
	t.Parallel()
	gw := &countingGateway{Gateway: gateway.NewFake(gateway.FakeConfig{Seed: 1})}
	s := newStack(t, stackOptions{gw: gw, failures: 2})
	const n = 20
	for i := range n {
		s.publishRequest(request(i, 4213), "") // every amount ends in 13: declined
	}
	w := s.startWorker("w1")
	s.waitFor("declines", 20*time.Second, func() bool { return s.counts()[payment.StatusDeclined] == n })
	s.waitSettled(20 * time.Second)
	require.EqualValues(t, n, gw.calls.Load(), "one gateway call per payment")
	require.Zero(t, gaugeValue(t, w, "paystream_breaker_state"), "breaker closed")
	require.Zero(t, s.streamCount("PAYMENTS_DLQ"))
	require.Equal(t, n, s.streamCount("PAYMENT_RESULTS"))
}

func TestBreakerPausesPullsAndRecovers(t *testing.T) {
	t.Parallel()
	srv, gw, calls := simGateway(t, sim.Config{ErrorRate: 1, Seed: 3}, 0)
	s := newStack(t, stackOptions{gw: gw, maxDeliver: 5, failures: 3, openTimeout: 2 * time.Second, concurrency: 4})
	const n = 40
	for i := range n {
		s.publishRequest(request(i, 1000+10*int64(i)), "")
	}
	w := s.startWorker("w1")
	s.waitFor("breaker open", 20*time.Second, func() bool { return gaugeValue(t, w, "paystream_breaker_state") == 2 })
	atOpen := calls.Load()
	// While open, the gateway is left alone.
	time.Sleep(time.Second)
	require.LessOrEqual(t, calls.Load()-atOpen, int64(1), "calls while the breaker is open")
	srv.SetConfig(sim.Config{})
	s.waitFor("all succeeded", 60*time.Second, func() bool { return s.counts()[payment.StatusSucceeded] == n })
	s.waitSettled(20 * time.Second)
	require.Zero(t, s.streamCount("PAYMENTS_DLQ"), "no dead letters because of the outage")
	require.Zero(t, gaugeValue(t, w, "paystream_breaker_state"), "breaker closed again")
}

func TestChargedButResponseLostChargesOnce(t *testing.T) {
	t.Parallel()
	srv, gw, calls := simGateway(t, sim.Config{LostResponseRate: 1, Seed: 3}, 0)
	s := newStack(t, stackOptions{gw: gw, failures: 1000})
	s.publishRequest(request(1, 1000), "")
	s.startWorker("w1")
	s.waitFor("first call", 20*time.Second, func() bool { return calls.Load() >= 1 })
	srv.SetConfig(sim.Config{})
	s.waitFor("succeeded", 20*time.Second, func() bool { return s.counts()[payment.StatusSucceeded] == 1 })
	s.waitSettled(20 * time.Second)
	require.GreaterOrEqual(t, calls.Load(), int64(2), "retried")
	require.Equal(t, 1, srv.ChargesFor("pay_000001"), "charged once")
	require.EqualValues(t, 1, srv.Stats().Charges)
	var attempts int
	require.NoError(t, s.pool.QueryRow(context.Background(), `SELECT attempts FROM payments`).Scan(&attempts))
	require.GreaterOrEqual(t, attempts, 2)
}

func TestDrainUnderLoadThenRestart(t *testing.T) {
	t.Parallel()
	fake := gateway.NewFake(gateway.FakeConfig{Seed: 1, Latency: 20 * time.Millisecond})
	s := newStack(t, stackOptions{gw: fake, concurrency: 32, shutdown: 5 * time.Second})
	const n = 600
	for i := range n {
		s.publishRequest(request(i, 1000+10*int64(i)), "")
	}
	w := s.startWorker("w1")
	s.waitFor("some progress", 30*time.Second, func() bool { return s.finalRows() > 50 })
	start := time.Now()
	w.stop(t)
	require.Less(t, time.Since(start), 5*time.Second+2*time.Second, "stopped within the shutdown timeout")
	require.Less(t, s.finalRows(), n, "stopped before the end")
	require.Zero(t, s.counts()[payment.StatusProcessing], "drain finished or released every claim")

	s.startWorker("w2")
	s.waitFor("all final", 60*time.Second, func() bool { return s.finalRows() == n })
	s.waitSettled(30 * time.Second)
	require.Empty(t, fake.Stats().DoubleCharged)
	require.Zero(t, s.streamCount("PAYMENTS_DLQ"))
}

func TestHardStopReleasesLeases(t *testing.T) {
	t.Parallel()
	fake := gateway.NewFake(gateway.FakeConfig{Seed: 1, Latency: 3 * time.Second})
	s := newStack(t, stackOptions{gw: fake, concurrency: 8, shutdown: 200 * time.Millisecond, lease: 30 * time.Second})
	for i := range 8 {
		s.publishRequest(request(i, 1000+10*int64(i)), "")
	}
	w := s.startWorker("w1")
	s.waitFor("claims", 20*time.Second, func() bool { return s.counts()[payment.StatusProcessing] == 8 })
	w.stop(t)
	// Cancelled calls gave their leases back: a new worker takes over at
	// once rather than after the 30s lease.
	var live int
	require.NoError(t, s.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM payments WHERE status = 'processing' AND lease_until > now()`).Scan(&live))
	require.Zero(t, live)
	s.startWorker("w2")
	s.waitFor("all final", 30*time.Second, func() bool { return s.finalRows() == 8 })
	require.Empty(t, fake.Stats().DoubleCharged)
}

func TestNATSRestartMidRun(t *testing.T) {
	t.Parallel()
	fake := gateway.NewFake(gateway.FakeConfig{Seed: 1, Latency: 2 * time.Millisecond})
	s := newStack(t, stackOptions{gw: fake, concurrency: 16})
	const n = 400
	for i := range n {
		s.publishRequest(request(i, 1000+10*int64(i)), "")
	}
	s.startWorker("w1")
	s.waitFor("some progress", 30*time.Second, func() bool { return s.finalRows() > 20 })
	s.nats.Restart()
	s.waitFor("all final after restart", 90*time.Second, func() bool { return s.finalRows() == n })
	s.waitSettled(60 * time.Second)
	require.Empty(t, fake.Stats().DoubleCharged)
	require.Zero(t, s.streamCount("PAYMENTS_DLQ"))
}

func TestPostgresConnectionLossMidRun(t *testing.T) {
	t.Parallel()
	fake := gateway.NewFake(gateway.FakeConfig{Seed: 1, Latency: 2 * time.Millisecond})
	s := newStack(t, stackOptions{gw: fake, concurrency: 16, maxDeliver: 20})
	const n = 400
	for i := range n {
		s.publishRequest(request(i, 1000+10*int64(i)), "")
	}
	s.startWorker("w1")
	s.waitFor("some progress", 30*time.Second, func() bool { return s.finalRows() > 20 })
	// Kill every connection of the workers' database.
	admin := pgtest.NewPool(t)
	for range 3 {
		s.waitFor("connections killed", 10*time.Second, func() bool {
			_, err := admin.Exec(context.Background(),
				`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`,
				s.pool.Config().ConnConfig.Database)
			return err == nil
		})
		time.Sleep(100 * time.Millisecond)
	}
	s.waitFor("all final after connection loss", 90*time.Second, func() bool { return s.finalRows() == n })
	s.waitSettled(60 * time.Second)
	require.Empty(t, fake.Stats().DoubleCharged)
	require.Zero(t, s.streamCount("PAYMENTS_DLQ"))
}

func counterSum(t *testing.T, w *worker, name string) float64 {
	t.Helper()
	mfs, err := w.reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func gaugeValue(t *testing.T, w *worker, name string) float64 {
	t.Helper()
	mfs, err := w.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// cardAcrossCut is an oversize body whose card number straddles byte 4096,
// where a dead letter cuts an oversize body.
func cardAcrossCut() []byte {
	prefix := `{"payment_id":"p1","merchant_id":"m001","amount_minor":100,"currency":"USD",` +
		`"payment_method":"pm_card_visa","description":"`
	body := prefix + strings.Repeat("d", 4090-len(prefix)) + "4111111111111111" + strings.Repeat("d", 61500) + `"}`
	return []byte(body)
}
