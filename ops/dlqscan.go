package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ScanDeadLetters returns a DeadLettersFunc that reads the whole dead-letter
// stream (one direct get per message, from the first to the last present
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
		var out []DeadLetterRef
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue // deleted
			}
			if err != nil {
				return nil, fmt.Errorf("read dead letter %d: %w", seq, err)
			}
			var body struct {
				PaymentID      string `json:"payment_id"`
				IdempotencyKey string `json:"idempotency_key"`
			}
			_ = json.Unmarshal(m.Data, &body)
			eff := body.IdempotencyKey
			if eff == "" {
				eff = body.PaymentID
			}
			if (body.PaymentID != "" && body.PaymentID == paymentID) || (eff != "" && eff == key) {
				out = append(out, DeadLetterRef{StreamSeq: m.Sequence, Subject: m.Subject,
					Reason: m.Header.Get("Paystream-Dlq-Reason"), Error: m.Header.Get("Paystream-Error"),
					Time: m.Time.UTC(), Deliveries: m.Header.Get("Paystream-Deliveries")})
			}
		}
		return out, nil
	}
}
