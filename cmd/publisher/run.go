package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/paystream/paystream/internal/cmdwire"
	"github.com/paystream/paystream/natsconn"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish"
)

// interruptGrace is how long an interrupted run waits for the publishes in
// flight before it cancels them.
const interruptGrace = 5 * time.Second

// progressInterval is the period of the plain progress lines.
const progressInterval = 2 * time.Second

// maxErrorLines bounds the publish errors printed; the summary counts all.
const maxErrorLines = 20

// run is the whole command: main only adds the signal handling and the exit
// code. It returns an error when the command line is wrong, when nothing can
// be published, when any message failed, or when ctx ended first.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "outbox" {
		return runOutbox(ctx, args[1:], getenv, stderr)
	}
	o, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}

	var in io.Reader
	switch o.from {
	case "":
	case "-":
		in = stdin
	default:
		f, err := os.Open(o.from)
		if err != nil {
			return fmt.Errorf("--from: %w", err)
		}
		defer f.Close()
		in = f
	}

	tr, stopTracing, err := startTracing(ctx, getenv, "paystream-publisher")
	if err != nil {
		return err
	}
	defer stopTracing()
	nc, err := connect(o)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	pub, err := publish.New(ctx, js, publish.Config{
		SubjectPrefix: o.cfg.SubjectPrefix,
		Stream:        o.cfg.Stream,
		MaxPending:    o.maxPending,
		Tracing:       tr,
	})
	if err != nil {
		return err
	}

	if !o.seedSet {
		o.seed = rand.Int64() //nolint:gosec // a seed for test load
	}
	total := int64(o.count)
	if in != nil {
		total = -1
	}
	c := &counters{}
	prog := newProgress(stderr, progressMode(stderr, o.quiet), total, progressInterval, c)
	defer prog.stop(false) // a no-op after the stop below

	// Publishes outlive an interrupt for a short grace, so that what is in
	// flight is still counted; pubCtx is cancelled when the grace runs out.
	pubCtx, cancelPub := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelPub()

	var errLines atomic.Int64
	done := func(r publish.Result) {
		switch {
		case r.Err != nil:
			c.failed.Add(1)
			if n := errLines.Add(1); n <= maxErrorLines {
				prog.printf("error: %v", r.Err)
			} else if n == maxErrorLines+1 {
				prog.printf("error: further publish errors are counted, not shown")
			}
		case r.Duplicate:
			c.dupRejected.Add(1)
		default:
			c.published.Add(1)
		}
		prog.add()
	}

	var lim *rate.Limiter
	if o.rate > 0 {
		lim = rate.NewLimiter(rate.Limit(o.rate), max(1, int(o.rate/20)))
	}
	s := sender{pub: pub, lim: lim, done: done, c: c}

	start := time.Now()
	var (
		stopped bool // ctx ended before everything was sent
		sendErr error
	)
	if in != nil {
		stopped, sendErr = s.fromLines(ctx, pubCtx, in, prog)
	} else {
		stopped = s.generated(ctx, pubCtx, o, start)
	}

	// Wait for the publishes in flight; each one ends by itself, its
	// attempts being bounded. Once ctx ends they have a grace period, then
	// they are cancelled (and count as failed).
	if pub.Flush(ctx) != nil {
		graceCtx, cancel := context.WithTimeout(context.Background(), interruptGrace)
		if pub.Flush(graceCtx) != nil {
			cancelPub()
			stopped = true
		}
		cancel()
	}
	if err := pub.Flush(context.Background()); err != nil {
		return err // cannot happen: Background never ends
	}
	elapsed := time.Since(start)
	prog.stop(!stopped && sendErr == nil)

	sum := c.summary(elapsed)
	if in == nil {
		sum.Seed = &o.seed
	}
	sum.Interrupted = stopped
	if err := sum.write(stdout, o.summaryJSN); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}

	switch {
	case sendErr != nil:
		return sendErr
	case stopped:
		return fmt.Errorf("interrupted after %d messages: %w", sum.Sent, context.Cause(ctx))
	case sum.Failed > 0:
		return fmt.Errorf("%d of %d messages failed", sum.Failed, sum.Failed+sum.Published+sum.DuplicatesRejectedByServer)
	}
	return nil
}

// connect connects to NATS with the shared connection code, as the worker
// does, but fails at once when no server answers.
func connect(o options) (*nats.Conn, error) {
	return natsconn.Connect(cmdwire.NATSOptions(o.cfg, "paystream-publisher"))
}

// counters are the run's tallies, updated from publish goroutines.
type counters struct {
	published, dupRejected, failed atomic.Int64
	// Sent by kind; only the sending goroutine writes them, but progress
	// reads them concurrently.
	valid, dupSent, invalidSent, expectedDeclines atomic.Int64
}

// sender feeds messages to the Publisher. Its methods take two contexts:
// ctx stops sending (Ctrl-C), pubCtx governs the publishes started, and
// ends only after ctx, once the publishes in flight had their grace.
type sender struct {
	pub  *publish.Publisher
	lim  *rate.Limiter
	done func(publish.Result)
	c    *counters
}

// send waits for the rate limiter and starts publishing m. It returns false
// when ctx ended first and nothing was sent.
func (s *sender) send(ctx, pubCtx context.Context, m publish.Msg) bool {
	if ctx.Err() != nil {
		return false
	}
	if s.lim != nil && s.lim.Wait(ctx) != nil {
		return false
	}
	return s.pub.PublishAsync(pubCtx, m, s.done) == nil
}

// generated sends o.count generated items. It reports whether ctx stopped
// it first.
func (s *sender) generated(ctx, pubCtx context.Context, o options, start time.Time) (stopped bool) {
	gen := publish.GenOptions{
		Merchants:  o.merchants,
		Duplicates: o.duplicates,
		Invalid:    o.invalid,
		CreatedAt:  start.UTC().Truncate(time.Second),
	}
	for i := range o.count {
		it := publish.Generate(o.seed, i, gen)
		if !s.send(ctx, pubCtx, publish.Msg{Subject: s.pub.Subject(it.Merchant), Body: it.Body, MsgID: it.MsgID}) {
			return true
		}
		switch it.Kind {
		case publish.KindValid:
			s.c.valid.Add(1)
			if it.Declined() {
				s.c.expectedDeclines.Add(1)
			}
		case publish.KindDuplicate:
			s.c.dupSent.Add(1)
		case publish.KindInvalid:
			s.c.invalidSent.Add(1)
		}
	}
	return false
}

// fromLines sends the JSON lines of r. A line that cannot be sent is
// reported and counted as failed; only ctx (stopped) or a read error stops
// it.
func (s *sender) fromLines(ctx, pubCtx context.Context, r io.Reader, prog *progress) (stopped bool, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for lineNo := 1; ; lineNo++ {
		line, readErr := br.ReadBytes('\n')
		if readErr != nil && !errors.Is(readErr, io.EOF) {
			return false, fmt.Errorf("--from: read line %d: %w", lineNo, readErr)
		}
		if body := bytes.TrimSpace(line); len(body) > 0 {
			m, req, err := s.lineMsg(body)
			if err != nil {
				s.c.failed.Add(1)
				prog.printf("line %d: %v", lineNo, err)
				prog.add()
			} else {
				if !s.send(ctx, pubCtx, m) {
					return true, nil
				}
				switch {
				case req == nil:
					s.c.invalidSent.Add(1)
				default:
					s.c.valid.Add(1)
					if req.AmountMinor%100 == 13 {
						s.c.expectedDeclines.Add(1)
					}
				}
			}
		}
		if readErr != nil { // io.EOF
			return false, nil
		}
		if ctx.Err() != nil {
			return true, nil
		}
	}
}

// lineMsg turns one line into a message for the subject of its merchant_id,
// with its payment_id as Nats-Msg-Id. req is the decoded request when the
// line is a valid request, nil when it is not (it is still sent).
func (s *sender) lineMsg(body []byte) (m publish.Msg, req *payment.Request, err error) {
	if len(body) > payment.MaxBodyBytes {
		return m, nil, fmt.Errorf("%d bytes, over the %d-byte limit of a request", len(body), payment.MaxBodyBytes)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return m, nil, fmt.Errorf("not JSON: %v at byte %d", syn, syn.Offset)
		}
		return m, nil, errors.New("not a JSON object")
	}
	if fields == nil {
		return m, nil, errors.New("not a JSON object")
	}
	raw, ok := fields["merchant_id"]
	if !ok {
		return m, nil, errors.New("no merchant_id: the subject cannot be built")
	}
	var merchant string
	if err := json.Unmarshal(raw, &merchant); err != nil {
		return m, nil, errors.New("merchant_id is not a string: the subject cannot be built")
	}
	if merchant == "" || strings.ContainsAny(merchant, ".*> \t\r\n") {
		return m, nil, errors.New("merchant_id cannot be a subject token (empty, or has dots, wildcards or spaces)")
	}
	var id string
	if raw, ok := fields["payment_id"]; ok {
		_ = json.Unmarshal(raw, &id) // not a string: no message id
	}
	m = publish.Msg{Subject: s.pub.Subject(merchant), Body: body, MsgID: id}
	req, err = payment.Decode(m.Subject, body, payment.Limits{})
	if err != nil {
		req = nil
	}
	return m, req, nil
}

// summary is the end-of-run report; its JSON form is parsed by scripts.
type summary struct {
	Published                  int64   `json:"published"`
	DuplicatesRejectedByServer int64   `json:"duplicates_rejected_by_server"`
	Failed                     int64   `json:"failed"`
	Valid                      int64   `json:"valid"`
	DuplicatesSent             int64   `json:"duplicates_sent"`
	InvalidSent                int64   `json:"invalid_sent"`
	ExpectedDeclines           int64   `json:"expected_declines"`
	Sent                       int64   `json:"sent"`
	Elapsed                    float64 `json:"elapsed"` // seconds
	Rate                       float64 `json:"rate"`    // acknowledged messages per second
	Seed                       *int64  `json:"seed,omitempty"`
	Interrupted                bool    `json:"interrupted"`
}

func (c *counters) summary(elapsed time.Duration) summary {
	s := summary{
		Published:                  c.published.Load(),
		DuplicatesRejectedByServer: c.dupRejected.Load(),
		Failed:                     c.failed.Load(),
		Valid:                      c.valid.Load(),
		DuplicatesSent:             c.dupSent.Load(),
		InvalidSent:                c.invalidSent.Load(),
		ExpectedDeclines:           c.expectedDeclines.Load(),
		Elapsed:                    elapsed.Seconds(),
	}
	s.Sent = s.Valid + s.DuplicatesSent + s.InvalidSent
	if s.Elapsed > 0 {
		s.Rate = float64(s.Published+s.DuplicatesRejectedByServer) / s.Elapsed
	}
	return s
}

func (s summary) write(w io.Writer, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(s)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "published:                      %d\n", s.Published)
	fmt.Fprintf(&b, "rejected as duplicate (server): %d\n", s.DuplicatesRejectedByServer)
	fmt.Fprintf(&b, "failed:                         %d\n", s.Failed)
	fmt.Fprintf(&b, "rate:                           %.1f msg/s (%.2fs)\n", s.Rate, s.Elapsed)
	fmt.Fprintf(&b, "sent:                           %d valid (%d to be declined), %d duplicates, %d invalid",
		s.Valid, s.ExpectedDeclines, s.DuplicatesSent, s.InvalidSent)
	if s.Seed != nil {
		fmt.Fprintf(&b, "; seed %d", *s.Seed)
	}
	b.WriteString("\n")
	if s.Interrupted {
		b.WriteString("interrupted: partial summary\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// progressMode chooses how progress is shown on w.
func progressMode(w io.Writer, quiet bool) progressKind {
	switch {
	case quiet:
		return progressNone
	case isTerminal(w):
		return progressBar
	default:
		return progressLines
	}
}
