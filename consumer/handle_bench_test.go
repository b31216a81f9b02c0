package consumer

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

// benchMsg is a delivered message whose acknowledgements go nowhere.
type benchMsg struct {
	jetstream.Msg
	md jetstream.MsgMetadata
}

func (m *benchMsg) Metadata() (*jetstream.MsgMetadata, error) { md := m.md; return &md, nil }
func (m *benchMsg) Subject() string                           { return "payments.requests.acme_shop" }
func (m *benchMsg) Data() []byte                              { return []byte(`{}`) }
func (m *benchMsg) Ack() error                                { return nil }
func (m *benchMsg) InProgress() error                         { return nil }

// benchJS stores every publish at once.
type benchJS struct{ jetstream.JetStream }

func (benchJS) Conn() *nats.Conn { return nil } // publishes go through PublishMsg

func (benchJS) PublishMsg(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return &jetstream.PubAck{}, nil
}

// benchProc decides every message succeeded, with its outcome event.
type benchProc struct{ o payment.Outcome }

func (benchProc) Admit() (int, time.Duration) { return -1, 0 }
func (p benchProc) Process(context.Context, processing.Message) processing.Decision {
	o := p.o
	return processing.Decision{Action: processing.ActionAck, Verdict: payment.VerdictSucceeded,
		PaymentID: o.PaymentID, Key: o.IdempotencyKey, Outcome: &o}
}

// benchConfig is a valid Config for the benchmarks and the internal tests.
func benchConfig() Config {
	return Config{Stream: "PAYMENTS", ResultsStream: "RESULTS", DLQStream: "DLQ", Consumer: "worker",
		SubjectPrefix: "payments", Replicas: 1, Concurrency: 64, MaxDeliver: 5, AckWait: 30 * time.Second,
		StreamMaxAge: time.Hour, DuplicateWindow: time.Minute, ShutdownTimeout: time.Second,
		RetryBackoff: time.Second, RetryBackoffMax: time.Minute}
}

// BenchmarkHandle is the consumer's own cost of one successful message, from
// the fetch (heartbeat started) through handle (outcome published, acked),
// with the processor and JetStream faked.
func BenchmarkHandle(b *testing.B) {
	cfg := benchConfig()
	proc := benchProc{o: payment.Outcome{PaymentID: "pay_01HZX3K9Q7", IdempotencyKey: "order-8812-attempt",
		Status: payment.StatusSucceeded, AmountMinor: 12999, Currency: "EUR", Gateway: "sim",
		GatewayChargeID: "ch_8812", Attempts: 1, CompletedAt: time.Date(2025, 3, 1, 12, 30, 0, 123456789, time.UTC)}}
	c := New(benchJS{}, cfg, proc, zerolog.Nop(), telemetry.New(prometheus.NewRegistry()))
	msg := &benchMsg{md: jetstream.MsgMetadata{NumDelivered: 1, Sequence: jetstream.SequencePair{Stream: 42}}}
	ctx := context.Background()
	beats := newBeats(cfg.AckWait / 3)
	b.ReportAllocs()
	for b.Loop() {
		c.handle(ctx, msg, beats(msg))
	}
}
