package consumer_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/internal/testenv/defaults"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

// probeProcessor admits one message at a time, like a half-open breaker,
// and records how many messages were ever processed at once.
type probeProcessor struct {
	running, peak, done atomic.Int64
	release             chan struct{}
}

func (p *probeProcessor) Admit() (int, time.Duration) { return 1, 0 }

func (p *probeProcessor) Process(ctx context.Context, _ processing.Message) processing.Decision {
	n := p.running.Add(1)
	defer p.running.Add(-1)
	for {
		old := p.peak.Load()
		if n <= old || p.peak.CompareAndSwap(old, n) {
			break
		}
	}
	select {
	case <-p.release:
	case <-ctx.Done():
	}
	p.done.Add(1)
	return processing.Decision{Action: processing.ActionAck, Verdict: payment.VerdictInFlight}
}

// TestAdmitLimitCountsMessagesInFlight is a regression test found by the
// chaos suite: a positive Admit limit bounded each pull but not the
// messages in flight, so a half-open breaker (limit 1) let the consumer
// pull message after message while the probe ran; each of them failed
// with ErrTooManyRequests and burnt a delivery.
func TestAdmitLimitCountsMessagesInFlight(t *testing.T) {
	t.Parallel()
	srv := natstest.New(t)
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ccfg := defaults.Consumer()
	ccfg.Concurrency, ccfg.ShutdownTimeout, ccfg.FetchMaxWait = 8, 5*time.Second, 100*time.Millisecond
	require.NoError(t, consumer.Provision(t.Context(), js, ccfg))
	const n = 5
	for range n {
		_, err := js.Publish(t.Context(), "payments.requests.m1", []byte(`{}`))
		require.NoError(t, err)
	}

	proc := &probeProcessor{release: make(chan struct{})}
	cons := consumer.New(js, ccfg, proc, zerolog.Nop(), telemetry.New(prometheus.NewRegistry()))
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = cons.Run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()

	for i := range n {
		require.Eventually(t, func() bool { return proc.running.Load() == 1 }, 10*time.Second, time.Millisecond, "message %d in flight", i+1)
		require.Never(t, func() bool { return proc.running.Load() > 1 }, 100*time.Millisecond, time.Millisecond,
			"one message at a time while the limit is 1")
		proc.release <- struct{}{}
		require.Eventually(t, func() bool { return proc.done.Load() == int64(i+1) }, 10*time.Second, time.Millisecond)
	}
	require.EqualValues(t, 1, proc.peak.Load())
}
