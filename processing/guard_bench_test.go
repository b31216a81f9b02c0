package processing_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

// benchClaims and benchGateway answer at once and keep nothing, so that a
// benchmark of Process measures the processor and its guard.
type benchClaims struct{}

func (benchClaims) Claim(context.Context, payment.Claim) (payment.ClaimResult, error) {
	return payment.ClaimResult{Kind: payment.ClaimNew, Attempt: 1}, nil
}

func (benchClaims) Complete(_ context.Context, c payment.Completion) (payment.Record, error) {
	return payment.Record{IdempotencyKey: c.Key, PaymentID: testPayment, Status: c.Status, Attempts: 1,
		Gateway: c.Gateway, GatewayChargeID: c.GatewayChargeID, AmountMinor: 1250, Currency: "EUR", CompletedAt: completedAt}, nil
}

func (benchClaims) Release(context.Context, payment.Release) error { return nil }

type benchGateway struct{}

func (benchGateway) Name() string { return testGateway }

func (benchGateway) Charge(context.Context, payment.Charge) (payment.ChargeResult, error) {
	return payment.ChargeResult{Status: payment.StatusSucceeded, ChargeID: "ch_1"}, nil
}

func (benchGateway) Lookup(context.Context, string) (payment.LookupResult, error) {
	return payment.LookupResult{}, nil
}

// BenchmarkProcess is the hot path's cost with and without the fleet's
// parts: "plain" has no rate limit and no concurrency limit (the defaults);
// "fleet budget" runs under a share set by the fleet (a finite rate limit,
// high enough never to wait, so that the limiter's bookkeeping, the share's
// re-reservation channel and Little's bound are measured, not the waits)
// with the fleet's breaker view set; "fleet budget + aimd" adds the
// adaptive concurrency limit. The fleet's KV work runs in the Coordinator's
// own goroutine, off this path.
func BenchmarkProcess(b *testing.B) {
	for _, bc := range []struct {
		name  string
		setup func(*processing.Config, *processing.Guard)
	}{
		{"plain", nil},
		{"fleet budget", func(_ *processing.Config, g *processing.Guard) {
			g.SetShare(1e9, false)
			g.SetFleet(false, time.Time{})
		}},
		{"fleet budget + aimd", func(_ *processing.Config, g *processing.Guard) {
			g.SetShare(1e9, false)
			g.SetFleet(false, time.Time{})
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := testConfig()
			if bc.name == "fleet budget + aimd" {
				cfg.GatewayConcurrency, cfg.AdaptiveConcurrency = 64, true
			}
			p := processing.New(cfg, benchClaims{}, benchGateway{}, zerolog.Nop(), telemetry.New(prometheus.NewRegistry()))
			if bc.setup != nil {
				bc.setup(&cfg, p.Guard())
			}
			msg := delivery(1)
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if d := p.Process(ctx, msg); d.Verdict != payment.VerdictSucceeded {
						b.Fatalf("verdict %v: %v", d.Verdict, d.Err)
					}
				}
			})
		})
	}
}

// BenchmarkGuardCall is one call's cost in the guard alone (Wait, then
// Execute of a call that answers at once), without and with a fleet share.
func BenchmarkGuardCall(b *testing.B) {
	for _, share := range []float64{0, 1e9} {
		name := "plain"
		if share > 0 {
			name = "fleet budget"
		}
		b.Run(name, func(b *testing.B) {
			cfg := testConfig().GuardConfig(testGateway)
			g := processing.NewGuard(cfg, zerolog.Nop(), telemetry.New(prometheus.NewRegistry()))
			if share > 0 {
				g.SetShare(share, false)
			}
			ctx := context.Background()
			call := func() (payment.ChargeResult, error) {
				return payment.ChargeResult{Status: payment.StatusSucceeded}, nil
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := g.Wait(ctx); err != nil {
					b.Fatal(err)
				}
				if _, err := g.Execute(call); err != nil {
					b.Fatal(err)
				}
				g.Held(time.Millisecond)
			}
		})
	}
}
