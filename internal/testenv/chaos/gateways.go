package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/localstack"
	"github.com/paystream/paystream/payment"
)

// GatewaysConfig configures RunGateways, the two-gateway scenario
// (docs/contract.md §5, "Several gateways"): two worker processes route
// payments over gateways A and B; A refuses connections for a while, then
// charges and loses its answers for a while, and a worker is killed with
// SIGKILL in the middle. Nothing may be lost, and no payment may be charged
// twice, whichever gateways it went to.
type GatewaysConfig struct {
	// BinDir holds the binaries (make build nats-server). Default "bin".
	BinDir string
	// Payments is the number of payments. Default 2000.
	Payments int
	// Duration is how long publishing takes; the faults are spread over
	// it. Default 20s.
	Duration time.Duration
	// SettleTimeout bounds the wait for every payment to end. Default 2m.
	SettleTimeout time.Duration
	// Seed seeds the amounts; 0 picks one.
	Seed int64
	// Out receives progress lines; nil discards them.
	Out io.Writer
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c GatewaysConfig) WithDefaults() GatewaysConfig {
	if c.BinDir == "" {
		c.BinDir = "bin"
	}
	if c.Payments <= 0 {
		c.Payments = 2000
	}
	if c.Duration <= 0 {
		c.Duration = 20 * time.Second
	}
	if c.SettleTimeout <= 0 {
		c.SettleTimeout = 2 * time.Minute
	}
	if c.Seed == 0 {
		c.Seed = time.Now().UnixNano()
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	return c
}

// GatewaysResult is what RunGateways found.
type GatewaysResult struct {
	Seed                        int64
	Payments                    int
	Succeeded, Declined, Failed int
	OnA, OnB                    int // final rows by gateway
	FailedOver                  int // rows that list more than one gateway tried
	Lost                        []string
	DoubleCharged               []string // charged more than once across A and B
	WrongGateway                []string // succeeded rows whose gateway holds no such charge
	ChargesA, ChargesB          int64
	Kills                       int
	Duration                    time.Duration
	Problems                    []string
	Dir                         string
}

// OK reports whether every invariant held.
func (r *GatewaysResult) OK() bool { return len(r.Problems) == 0 }

// FigureLine is the scenario's one-line summary.
func (r *GatewaysResult) FigureLine() string {
	return fmt.Sprintf("chaos-gateways payments=%d succeeded=%d declined=%d failed=%d on_a=%d on_b=%d failed_over=%d charges_a=%d charges_b=%d kills=%d lost=%d double_charged=%d wrong_gateway=%d duration=%s",
		r.Payments, r.Succeeded, r.Declined, r.Failed, r.OnA, r.OnB, r.FailedOver, r.ChargesA, r.ChargesB, r.Kills,
		len(r.Lost), len(r.DoubleCharged), len(r.WrongGateway), r.Duration.Round(time.Second))
}

// switchableServer serves h on a fixed port and can stop listening (so that
// connections are refused) and listen again.
type switchableServer struct {
	addr string
	h    http.Handler
	mu   sync.Mutex
	srv  *http.Server
	wg   sync.WaitGroup
}

func newSwitchableServer(h http.Handler) (*switchableServer, error) {
	s := &switchableServer{h: h}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = l.Addr().String()
	s.serve(l)
	return s, nil
}

func (s *switchableServer) serve(l net.Listener) {
	s.srv = &http.Server{Handler: s.h, ReadHeaderTimeout: 5 * time.Second}
	srv := s.srv
	s.wg.Go(func() { _ = srv.Serve(l) })
}

// refuse closes the listener and every connection: new ones are refused.
func (s *switchableServer) refuse() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}

// accept listens again on the same address.
func (s *switchableServer) accept() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return nil
	}
	var err error
	for range 50 {
		var l net.Listener
		if l, err = net.Listen("tcp", s.addr); err == nil {
			s.serve(l)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func (s *switchableServer) close() {
	s.refuse()
	s.wg.Wait()
}

// RunGateways runs the two-gateway scenario against real processes: NATS,
// Postgres, two workers configured with PAYSTREAM_GATEWAYS (A and B, equal
// weights) and two gateway simulators served over HTTP in this process.
func RunGateways(ctx context.Context, cfg GatewaysConfig) (*GatewaysResult, error) {
	cfg = cfg.WithDefaults()
	start := time.Now()
	res := &GatewaysResult{Seed: cfg.Seed, Payments: cfg.Payments}
	dir, err := os.MkdirTemp("", "paystream-chaos-gateways-")
	if err != nil {
		return nil, fmt.Errorf("chaos gateways: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // the postgres user must reach it
		return nil, fmt.Errorf("chaos gateways: %w", err)
	}
	res.Dir = dir
	fmt.Fprintf(cfg.Out, "chaos-gateways: %d payments over %s, gateways A and B, seed %d\n", cfg.Payments, cfg.Duration, cfg.Seed)
	err = runGateways(ctx, cfg, dir, res)
	res.Duration = time.Since(start)
	if err == nil && res.OK() {
		_ = os.RemoveAll(dir)
		res.Dir = ""
	}
	return res, err
}

func runGateways(ctx context.Context, cfg GatewaysConfig, dir string, res *GatewaysResult) (err error) {
	out := &lockedWriter{w: cfg.Out}
	simCfg := sim.Config{Latency: 10 * time.Millisecond, LatencyJitter: 20 * time.Millisecond, SpareLookups: true}
	simA := sim.New(simCfg, zerolog.Nop(), prometheus.NewRegistry())
	simB := sim.New(simCfg, zerolog.Nop(), prometheus.NewRegistry())
	srvA, err := newSwitchableServer(simA)
	if err != nil {
		return fmt.Errorf("chaos gateways: %w", err)
	}
	defer srvA.close()
	srvB, err := newSwitchableServer(simB)
	if err != nil {
		return fmt.Errorf("chaos gateways: %w", err)
	}
	defer srvB.close()

	stack, err := localstack.Start(ctx, localstack.Config{Dir: dir, BinDir: cfg.BinDir, Log: out, StopTimeout: 20 * time.Second})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := stack.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	env := workerEnv("")
	delete(env, "PAYSTREAM_GATEWAY_URL")
	env["PAYSTREAM_GATEWAYS"] = fmt.Sprintf("a=http://%s;weight=1,b=http://%s;weight=1", srvA.addr, srvB.addr)
	env["PAYSTREAM_MIGRATE"] = "false"
	workers := map[string]*localstack.Process{}
	for _, name := range []string{"w1", "w2"} {
		if workers[name], err = stack.StartWorker(ctx, name, env); err != nil {
			return err
		}
	}

	nc, err := nats.Connect(stack.NATSURL())
	if err != nil {
		return fmt.Errorf("chaos gateways: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("chaos gateways: %w", err)
	}

	// The faults, spread over the publishing: A refuses connections from
	// 20 % to 45 % of it; A charges and loses its answers (so that each of
	// those attempts is ambiguous) from 55 % to 75 %; w1 is killed at 60 %
	// and started again at 70 %.
	faults := []struct {
		at   float64
		what string
		do   func() error
	}{
		{0.20, "A refuses connections", func() error { srvA.refuse(); return nil }},
		{0.45, "A accepts connections again", srvA.accept},
		{0.55, "A charges and loses its answers", func() error {
			c := simCfg
			c.LostResponseRate = 1
			simA.SetConfig(c)
			return nil
		}},
		{0.60, "SIGKILL w1", func() error { res.Kills++; return workers["w1"].Signal(syscall.SIGKILL) }},
		{0.70, "restart w1", func() error {
			_, _ = workers["w1"].Wait(ctx)
			p, err := stack.StartWorker(ctx, "w1", env)
			workers["w1"] = p
			return err
		}},
		{0.75, "A answers again", func() error { simA.SetConfig(simCfg); return nil }},
	}
	perPayment := cfg.Duration / time.Duration(cfg.Payments)
	next := 0
	pubStart := time.Now()
	for i := range cfg.Payments {
		for next < len(faults) && float64(i) >= faults[next].at*float64(cfg.Payments) {
			fmt.Fprintf(out, "chaos-gateways: %s (payment %d)\n", faults[next].what, i)
			if err := faults[next].do(); err != nil {
				return fmt.Errorf("chaos gateways: %s: %w", faults[next].what, err)
			}
			next++
		}
		r := payment.Request{PaymentID: fmt.Sprintf("gw_%06d", i), MerchantID: "m" + strconv.Itoa(i%5),
			AmountMinor: 100 + (cfg.Seed+int64(i)*7)%9000, Currency: "EUR", PaymentMethod: "pm_card_visa"}
		body, err := json.Marshal(r)
		if err != nil {
			return err
		}
		m := nats.NewMsg("payments.requests." + r.MerchantID)
		m.Header.Set(jetstream.MsgIDHeader, r.PaymentID)
		m.Data = body
		if _, err := js.PublishMsg(ctx, m); err != nil {
			return fmt.Errorf("chaos gateways: publish: %w", err)
		}
		if d := time.Until(pubStart.Add(time.Duration(i+1) * perPayment)); d > 0 && !sleep(ctx, d) {
			return ctx.Err()
		}
	}
	for ; next < len(faults); next++ {
		if err := faults[next].do(); err != nil {
			return fmt.Errorf("chaos gateways: %s: %w", faults[next].what, err)
		}
	}

	pool, err := pgxpool.New(ctx, stack.DatabaseURL())
	if err != nil {
		return fmt.Errorf("chaos gateways: %w", err)
	}
	defer pool.Close()
	deadline := time.Now().Add(cfg.SettleTimeout)
	for {
		var final int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM payments WHERE status IN ('succeeded', 'declined', 'failed')`).Scan(&final); err != nil {
			return fmt.Errorf("chaos gateways: %w", err)
		}
		if final >= cfg.Payments || time.Now().After(deadline) {
			break
		}
		if !sleep(ctx, 500*time.Millisecond) {
			return ctx.Err()
		}
	}
	return auditGateways(ctx, pool, simA, simB, cfg, res)
}

// auditGateways checks the rows against both simulators.
func auditGateways(ctx context.Context, pool *pgxpool.Pool, simA, simB *sim.Server, cfg GatewaysConfig, res *GatewaysResult) error {
	rows, err := pool.Query(ctx, `SELECT payment_id, status, coalesce(gateway, ''), coalesce(gateway_charge_id, ''),
		coalesce(cardinality(gateways_tried), 0) FROM payments`)
	if err != nil {
		return fmt.Errorf("chaos gateways: %w", err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	for rows.Next() {
		var id, status, gw, charge string
		var tried int
		if err := rows.Scan(&id, &status, &gw, &charge, &tried); err != nil {
			return err
		}
		seen[id] = true
		switch payment.Status(status) {
		case payment.StatusSucceeded:
			res.Succeeded++
		case payment.StatusDeclined:
			res.Declined++
		case payment.StatusFailed:
			res.Failed++
		default:
			res.Lost = append(res.Lost, id+" ("+status+")")
			continue
		}
		switch gw {
		case "a":
			res.OnA++
		case "b":
			res.OnB++
		}
		if tried > 1 {
			res.FailedOver++
		}
		a, b := simA.Lookup(id), simB.Lookup(id)
		if n := simA.ChargesFor(id) + simB.ChargesFor(id); n > 1 {
			res.DoubleCharged = append(res.DoubleCharged, id)
		}
		if payment.Status(status) == payment.StatusSucceeded {
			held := map[string]sim.KeyState{"a": a, "b": b}[gw]
			if !held.Charged || held.ChargeID != charge {
				res.WrongGateway = append(res.WrongGateway, id)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i := range cfg.Payments {
		if id := fmt.Sprintf("gw_%06d", i); !seen[id] {
			res.Lost = append(res.Lost, id)
		}
	}
	stA, stB := simA.Stats(), simB.Stats()
	res.ChargesA, res.ChargesB = stA.Charges, stB.Charges
	res.DoubleCharged = append(res.DoubleCharged, stA.DoubleCharged...)
	res.DoubleCharged = append(res.DoubleCharged, stB.DoubleCharged...)
	if len(res.Lost) > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d payments lost or unfinished, e.g. %v", len(res.Lost), res.Lost[:min(5, len(res.Lost))]))
	}
	if len(res.DoubleCharged) > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d payments charged twice, e.g. %v", len(res.DoubleCharged), res.DoubleCharged[:min(5, len(res.DoubleCharged))]))
	}
	if len(res.WrongGateway) > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d succeeded rows name a gateway without their charge, e.g. %v", len(res.WrongGateway), res.WrongGateway[:min(5, len(res.WrongGateway))]))
	}
	if res.FailedOver == 0 {
		res.Problems = append(res.Problems, "no payment failed over while A refused connections")
	}
	return nil
}
