package ops

import (
	"context"
	"strconv"
)

// ForStory returns the DeadLettersFunc of ShowPayment that d answers: the
// dead letters whose body names the payment id or the effective key, read
// with List (ForPayment's rule, both criteria at once).
func (d DeadLetters) ForStory() DeadLettersFunc {
	return func(ctx context.Context, paymentID, key string) ([]DeadLetterRef, error) {
		list, err := d.List(ctx, DeadLetterFilter{PaymentID: paymentID, Key: key})
		if err != nil {
			return nil, err
		}
		out := make([]DeadLetterRef, 0, len(list.Items))
		for _, dl := range list.Items {
			ref := DeadLetterRef{StreamSeq: dl.Seq, Subject: dl.Subject, Reason: dl.Reason, Error: dl.Error, Time: dl.ReceivedAt}
			if dl.Deliveries > 0 {
				ref.Deliveries = strconv.FormatUint(dl.Deliveries, 10)
			}
			out = append(out, ref)
		}
		return out, nil
	}
}
