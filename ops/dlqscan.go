package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ScanDeadLetters returns a DeadLettersFunc that reads the whole dead-letter
// stream (an ordered consumer, from the first message to the last present
// when called) and keeps the dead letters whose body names the payment id
// or the effective key. A stopgap until the DLQ reader of package ops
// answers it by index: fine for tests and small streams.
func ScanDeadLetters(js jetstream.JetStream, stream string) DeadLettersFunc {
	return func(ctx context.Context, paymentID, key string) ([]DeadLetterRef, error) {
		s, err := js.Stream(ctx, stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("dead-letter stream %s: %w", stream, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("dead-letter stream %s: %w", stream, err)
		}
		if info.State.Msgs == 0 {
			return nil, nil
		}
		last := info.State.LastSeq
		c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return nil, fmt.Errorf("dead-letter stream %s: %w", stream, err)
		}
		var out []DeadLetterRef
		for {
			batch, err := c.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				return nil, fmt.Errorf("read dead letters: %w", err)
			}
			got := 0
			for m := range batch.Messages() {
				got++
				md, err := m.Metadata()
				if err != nil {
					continue
				}
				var body struct {
					PaymentID      string `json:"payment_id"`
					IdempotencyKey string `json:"idempotency_key"`
				}
				_ = json.Unmarshal(m.Data(), &body)
				eff := body.IdempotencyKey
				if eff == "" {
					eff = body.PaymentID
				}
				if (body.PaymentID != "" && body.PaymentID == paymentID) || (eff != "" && eff == key) {
					h := m.Headers()
					out = append(out, DeadLetterRef{StreamSeq: md.Sequence.Stream, Subject: m.Subject(),
						Reason: h.Get("Paystream-Dlq-Reason"), Error: h.Get("Paystream-Error"),
						Time: md.Timestamp.UTC(), Deliveries: h.Get("Paystream-Deliveries")})
				}
				if md.Sequence.Stream >= last {
					return out, nil
				}
			}
			if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return nil, fmt.Errorf("read dead letters: %w", err)
			}
			if got == 0 {
				return out, nil
			}
		}
	}
}
