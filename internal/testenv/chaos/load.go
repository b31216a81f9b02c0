package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/paystream/paystream/internal/jsretry"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish"
)

// loadMsg is one message of the load.
type loadMsg struct {
	subject string
	body    []byte
	msgID   string
}

// load is the generated load and what it should lead to.
type load struct {
	msgs      []loadMsg
	validKeys []string
	invalid   int
	conflicts int
	dups      int
}

// makeLoad generates messages until it has n distinct valid payments:
// valid requests, duplicates (the same body under a new message id),
// conflicts (an earlier payment's id and key with another amount) and
// invalid messages, as publish.Generate makes them.
func makeLoad(seed int64, n int, dups, conflicts, invalid float64, subjectPrefix string) load {
	gen := publish.GenOptions{Duplicates: dups, Invalid: invalid}
	var l load
	var valid []int // indexes of valid items, for conflicts
	for i := 0; len(l.validKeys) < n; i++ {
		it := publish.Generate(seed, i, gen)
		l.msgs = append(l.msgs, loadMsg{subject: subjectPrefix + ".requests." + it.Merchant, body: it.Body, msgID: it.MsgID})
		switch it.Kind {
		case publish.KindValid:
			l.validKeys = append(l.validKeys, it.Request.EffectiveKey())
			valid = append(valid, i)
		case publish.KindDuplicate:
			l.dups++
		case publish.KindInvalid:
			l.invalid++
		}

		rng := rand.New(rand.NewPCG(uint64(seed), uint64(i)^0x5bd1e995)) //nolint:gosec // test load
		if len(valid) <= 100 || rng.Float64() >= conflicts {
			continue
		}
		// A conflict of a payment published a while ago, so that the
		// original is usually claimed first.
		orig := publish.Generate(seed, valid[rng.IntN(len(valid)-50)], gen)
		req := *orig.Request
		req.AmountMinor++
		body, err := req.Marshal()
		if err != nil {
			panic("chaos: marshal conflict: " + err.Error())
		}
		l.msgs = append(l.msgs, loadMsg{subject: subjectPrefix + ".requests." + req.MerchantID, body: body,
			msgID: fmt.Sprintf("conflict-%d-%s", i, req.PaymentID)})
		l.conflicts++
	}
	return l
}

// floodRequest is the payment published hundreds of times at once.
func floodRequest(seed int64) *payment.Request {
	return &payment.Request{
		PaymentID:     fmt.Sprintf("flood_%016x", uint64(seed)),
		MerchantID:    "m001",
		CustomerID:    "cus_flood",
		AmountMinor:   4242,
		Currency:      "EUR",
		PaymentMethod: "pm_card_visa",
		Description:   "one payment, many copies",
	}
}

// sender publishes messages, retrying each until the stream acknowledges
// it (the Nats-Msg-Id makes a retry of a stored message a no-op), so that
// every message of the load is accepted even across a NATS restart.
type sender struct {
	pub       *publish.Publisher
	published atomic.Int64
	retries   atomic.Int64
}

// send publishes m until it is acknowledged, the stream refuses it, or ctx
// ends.
func (s *sender) send(ctx context.Context, m loadMsg) error {
	for {
		_, err := s.pub.PublishRaw(ctx, m.subject, m.body, m.msgID)
		if err == nil {
			s.published.Add(1)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publish %s: %w", m.msgID, ctx.Err())
		}
		if jsretry.Refused(err) {
			// The stream refuses the message itself (wrong stream, too
			// large): no retry will store it.
			return fmt.Errorf("publish %s: %w", m.msgID, err)
		}
		s.retries.Add(1)
		if !sleep(ctx, 200*time.Millisecond) {
			return fmt.Errorf("publish %s: %w", m.msgID, ctx.Err())
		}
	}
}

// sendAll publishes msgs at about perSecond with parallel senders and
// returns when all are acknowledged or ctx ends.
func (s *sender) sendAll(ctx context.Context, msgs []loadMsg, perSecond float64, parallel int) error {
	lim := rate.NewLimiter(rate.Limit(perSecond), max(1, int(perSecond/20)))
	next := make(chan loadMsg)
	errc := make(chan error, parallel)
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for m := range next {
				if err := s.send(ctx, m); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for _, m := range msgs {
		if err = lim.Wait(ctx); err != nil {
			break
		}
		select {
		case next <- m:
		case err = <-errc:
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errc)
	if err == nil {
		err = <-errc // nil when the channel is empty
	}
	return err
}

// sendBurst publishes msgs all at once from parallel senders.
func (s *sender) sendBurst(ctx context.Context, msgs []loadMsg, parallel int) error {
	return s.sendAll(ctx, msgs, 1e9, parallel)
}
