// Package audit checks a running paystream system from the outside — the
// payments table, the three JetStream streams and the gateway simulator —
// never from the workers' own counters. `make demo` prints its verdict, and
// the chaos suite its figure line, from a Report.
//
// An Auditor connects to the system; WaitSettled waits until the work has
// drained, Collect takes a Snapshot of everything, and Check compares a
// Snapshot with what was published (Expect) and returns a Report of every
// broken guarantee (see docs/reliability.md for the definitions).
package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/defaults"
)

// Config says where the system under audit is.
type Config struct {
	// NATSURL is the NATS server the workers use.
	NATSURL string
	// DatabaseURL is the workers' Postgres database.
	DatabaseURL string
	// GatewayURL is the base URL of the gateway simulator.
	GatewayURL string
	// Streams names the streams and the consumer; the zero value means a
	// worker's defaults (defaults.Consumer: PAYMENTS, PAYMENT_RESULTS,
	// PAYMENTS_DLQ, payment-workers).
	Streams consumer.Config
	// Keys, when set, limits the rows read to these idempotency keys (for a
	// shared database holding other runs' rows); nil reads every row.
	Keys []string
}

// Auditor reads a paystream system. Close releases it.
type Auditor struct {
	cfg  Config
	nc   *nats.Conn
	js   jetstream.JetStream
	pool *pgxpool.Pool
	http *http.Client
}

// New connects to NATS and Postgres. NATS reconnects for ever, so that an
// Auditor survives a NATS restart.
func New(ctx context.Context, cfg Config) (*Auditor, error) {
	if cfg.Streams == (consumer.Config{}) {
		cfg.Streams = defaults.Consumer()
	}
	nc, err := nats.Connect(cfg.NATSURL, nats.Name("paystream-audit"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, fmt.Errorf("audit: connect to NATS: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("audit: jetstream: %w", err)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("audit: database url: %w", err)
	}
	pcfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("audit: database: %w", err)
	}
	return &Auditor{cfg: cfg, nc: nc, js: js, pool: pool,
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}}, nil
}

// Close closes the connections.
func (a *Auditor) Close() {
	a.http.CloseIdleConnections()
	a.pool.Close()
	a.nc.Close()
}

// JetStream returns the Auditor's JetStream context, for publishing.
func (a *Auditor) JetStream() jetstream.JetStream { return a.js }

// Progress is the state of the work at one moment.
type Progress struct {
	// Pending is the consumer's count of messages not yet delivered.
	Pending uint64
	// AckPending is the consumer's count of delivered, unacknowledged
	// messages (including those waiting for a delayed redelivery).
	AckPending int
	// Requests is the number of messages in the requests stream.
	Requests uint64
	// DeadLetters is the number of messages in the dead-letter stream.
	DeadLetters uint64
	// Outcomes is the number of messages in the results stream.
	Outcomes uint64
	// Processing, Unknown and Final count the rows by state: processing,
	// unknown (the gateway's answer is awaited by reconciliation,
	// docs/contract.md §6.8) and final (succeeded, declined or failed).
	Processing, Unknown, Final int
}

// Drained reports whether the consumer has nothing left to deliver or to
// be acknowledged and no row is processing or unknown.
func (p Progress) Drained() bool {
	return p.Pending == 0 && p.AckPending == 0 && p.Processing == 0 && p.Unknown == 0
}

// Progress reads the consumer, the streams and the row counts.
func (a *Auditor) Progress(ctx context.Context) (Progress, error) {
	var p Progress
	s := a.cfg.Streams
	cons, err := a.js.Consumer(ctx, s.Stream, s.Consumer)
	if err != nil {
		return p, fmt.Errorf("audit: consumer %s: %w", s.Consumer, err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return p, fmt.Errorf("audit: consumer info: %w", err)
	}
	p.Pending, p.AckPending = ci.NumPending, ci.NumAckPending
	for _, st := range []struct {
		name string
		n    *uint64
	}{{s.Stream, &p.Requests}, {s.DLQStream, &p.DeadLetters}, {s.ResultsStream, &p.Outcomes}} {
		info, err := a.streamInfo(ctx, st.name)
		if err != nil {
			return p, err
		}
		*st.n = info.State.Msgs
	}
	q := `SELECT count(*) FILTER (WHERE status = 'processing'), count(*) FILTER (WHERE status = 'unknown'),
		count(*) FILTER (WHERE status IN ('succeeded', 'declined', 'failed')) FROM payments`
	var args []any
	if a.cfg.Keys != nil {
		q += ` WHERE idempotency_key = ANY($1)`
		args = append(args, a.cfg.Keys)
	}
	if err := a.pool.QueryRow(ctx, q, args...).Scan(&p.Processing, &p.Unknown, &p.Final); err != nil {
		return p, fmt.Errorf("audit: count rows: %w", err)
	}
	return p, nil
}

// Statuses returns the status of the row of each of keys that has one.
func (a *Auditor) Statuses(ctx context.Context, keys []string) (map[string]string, error) {
	rows, err := a.pool.Query(ctx, `SELECT idempotency_key, status FROM payments WHERE idempotency_key = ANY($1)`, keys)
	if err != nil {
		return nil, fmt.Errorf("audit: read statuses: %w", err)
	}
	out := make(map[string]string, len(keys))
	var key, status string
	if _, err := pgx.ForEachRow(rows, []any{&key, &status}, func() error {
		out[key] = status
		return nil
	}); err != nil {
		return nil, fmt.Errorf("audit: read statuses: %w", err)
	}
	return out, nil
}

func (a *Auditor) streamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	st, err := a.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("audit: stream %s: %w", name, err)
	}
	return st.CachedInfo(), nil
}

// Settled says when WaitSettled may stop waiting.
type Settled struct {
	// Final is the number of final rows to wait for (the distinct valid
	// keys published).
	Final int
	// DeadLetters is the least number of dead letters to wait for (the
	// invalid messages published, say).
	DeadLetters uint64
	// Poll is the interval between looks; default 500ms.
	Poll time.Duration
}

// WaitSettled polls Progress until the work is drained and the wanted
// counts are reached on two looks in a row, or ctx ends (then it returns
// the last Progress with ctx's error). report, when set, gets every
// Progress read. Errors reading the system (during a restart, say) are
// retried.
func (a *Auditor) WaitSettled(ctx context.Context, want Settled, report func(Progress)) (Progress, error) {
	if want.Poll <= 0 {
		want.Poll = 500 * time.Millisecond
	}
	t := time.NewTicker(want.Poll)
	defer t.Stop()
	var (
		last    Progress
		lastErr error
		streak  int
	)
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		p, err := a.Progress(pctx)
		cancel()
		lastErr = err
		if err == nil {
			last = p
			if report != nil {
				report(p)
			}
			if p.Drained() && p.Final >= want.Final && p.DeadLetters >= want.DeadLetters {
				streak++
				if streak >= 2 {
					return p, nil
				}
			} else {
				streak = 0
			}
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return last, fmt.Errorf("%w (last error: %w)", ctx.Err(), lastErr)
			}
			return last, ctx.Err()
		case <-t.C:
		}
	}
}

// Message is one stored JetStream message.
type Message struct {
	Seq     uint64
	Subject string
	// Time is when the server stored the message.
	Time   time.Time
	Header nats.Header
	Data   []byte
}

// Row is one row of the payments table.
type Row struct {
	Key             string
	PaymentID       string
	Status          string
	Attempts        int
	GatewayChargeID string
	ErrorCode       string
	Fingerprint     string
	CreatedAt       time.Time
	CompletedAt     time.Time // zero while processing
}

// Snapshot is everything the audit reads, taken at one moment (each part
// read one after the other).
type Snapshot struct {
	Taken       time.Time
	Progress    Progress
	Requests    []Message
	Results     []Message
	DeadLetters []Message
	Rows        []Row
	// Gateway is the simulator's GET /v1/stats, in_flight_conflicts (the
	// requests answered 409 because a call with the same key was still
	// running) included.
	Gateway sim.Stats
	// Charges is what the simulator holds for the key of every row.
	Charges map[string]sim.KeyState
}

// Collect reads the streams, the rows and the simulator.
func (a *Auditor) Collect(ctx context.Context) (*Snapshot, error) {
	snap := &Snapshot{Taken: time.Now()}
	var err error
	if snap.Progress, err = a.Progress(ctx); err != nil {
		return nil, err
	}
	s := a.cfg.Streams
	if snap.Requests, err = a.readStream(ctx, s.Stream); err != nil {
		return nil, err
	}
	if snap.Results, err = a.readStream(ctx, s.ResultsStream); err != nil {
		return nil, err
	}
	if snap.DeadLetters, err = a.readStream(ctx, s.DLQStream); err != nil {
		return nil, err
	}
	if snap.Rows, err = a.rows(ctx); err != nil {
		return nil, err
	}
	if err := a.stats(ctx, snap); err != nil {
		return nil, err
	}
	keys := make([]string, len(snap.Rows))
	for i, r := range snap.Rows {
		keys[i] = r.Key
	}
	if snap.Charges, err = a.lookup(ctx, keys); err != nil {
		return nil, err
	}
	return snap, nil
}

// readStream reads every message of a stream with an ordered consumer, up
// to the last sequence at the start.
func (a *Auditor) readStream(ctx context.Context, name string) ([]Message, error) {
	st, err := a.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("audit: stream %s: %w", name, err)
	}
	state := st.CachedInfo().State
	if state.Msgs == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", name, err)
	}
	out := make([]Message, 0, state.Msgs)
	reached := false // a message at or past the last sequence was read
	for !reached && len(out) < int(state.Msgs) {
		// Ask for no more than remain, so that the pull request ends when
		// they came and leaves nothing waiting behind.
		want := min(1000, int(state.Msgs)-len(out))
		batch, err := cons.Fetch(want, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("audit: read %s: %w", name, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("audit: read %s: %w", name, err)
			}
			if md.Sequence.Stream >= state.LastSeq {
				reached = true
			}
			if md.Sequence.Stream > state.LastSeq {
				continue // stored after the snapshot began
			}
			out = append(out, Message{Seq: md.Sequence.Stream, Subject: m.Subject(), Time: md.Timestamp,
				Header: m.Headers(), Data: bytes.Clone(m.Data())})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("audit: read %s: %w", name, err)
		}
		if got == 0 {
			return nil, fmt.Errorf("audit: read %s: no message after sequence %d of %d", name, lastSeq(out), state.LastSeq)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func lastSeq(ms []Message) uint64 {
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Seq
}

func (a *Auditor) rows(ctx context.Context) ([]Row, error) {
	q := `SELECT idempotency_key, payment_id, status, attempts, coalesce(gateway_charge_id, ''),
		coalesce(error_code, ''), fingerprint, created_at, completed_at FROM payments`
	var args []any
	if a.cfg.Keys != nil {
		q += ` WHERE idempotency_key = ANY($1)`
		args = append(args, a.cfg.Keys)
	}
	rows, err := a.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: read rows: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Row, error) {
		var (
			row       Row
			attempts  int32
			completed *time.Time
		)
		err := r.Scan(&row.Key, &row.PaymentID, &row.Status, &attempts, &row.GatewayChargeID,
			&row.ErrorCode, &row.Fingerprint, &row.CreatedAt, &completed)
		row.Attempts = int(attempts)
		if completed != nil {
			row.CompletedAt = *completed
		}
		return row, err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: read rows: %w", err)
	}
	return out, nil
}

// stats reads the simulator's GET /v1/stats into snap.Gateway; a simulator
// without the in_flight_conflicts counter leaves it at 0.
func (a *Auditor) stats(ctx context.Context, snap *Snapshot) error {
	return a.getJSON(ctx, http.MethodGet, a.cfg.GatewayURL+"/v1/stats", nil, &snap.Gateway)
}

// lookup asks the simulator what it holds for each key, in chunks.
func (a *Auditor) lookup(ctx context.Context, keys []string) (map[string]sim.KeyState, error) {
	out := make(map[string]sim.KeyState, len(keys))
	const chunk = 5000
	for i := 0; i < len(keys); i += chunk {
		part := keys[i:min(i+chunk, len(keys))]
		var ans struct {
			Keys []sim.KeyState `json:"keys"`
		}
		if err := a.getJSON(ctx, http.MethodPost, a.cfg.GatewayURL+"/v1/charges/lookup", map[string]any{"keys": part}, &ans); err != nil {
			return nil, err
		}
		for _, ks := range ans.Keys {
			out[ks.Key] = ks
		}
	}
	return out, nil
}

// getJSON sends body (JSON, unless nil) and decodes the JSON answer into v.
func (a *Auditor) getJSON(ctx context.Context, method, url string, body, v any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("audit: %s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("audit: %s %s: %w", method, url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("audit: %s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("audit: %s %s: %w", method, url, err)
	}
	return nil
}

// headerUint returns the unsigned integer in header h of m, or 0.
func headerUint(m Message, h string) uint64 {
	n, _ := strconv.ParseUint(m.Header.Get(h), 10, 64)
	return n
}
