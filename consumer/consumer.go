package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

// Processor is the payment logic the consumer drives.
type Processor interface {
	// Process runs one delivery and decides what to do with it.
	Process(ctx context.Context, m processing.Message) processing.Decision
	// Admit says how many messages may be in flight now (-1 unlimited) and,
	// when none, how long to wait. A positive limit counts the messages
	// still being processed: with 1 (a half-open breaker's probe) the
	// consumer pulls nothing until the message in flight has finished.
	Admit() (limit int, wait time.Duration)
}

// Dead-letter headers (docs/contract.md §4).
const (
	HeaderDLQReason       = "Paystream-Dlq-Reason"
	HeaderDLQError        = "Paystream-Error"
	HeaderOriginalSubject = "Paystream-Original-Subject"
	HeaderStreamSeq       = "Paystream-Stream-Seq"
	HeaderDeliveries      = "Paystream-Deliveries"
	HeaderRedacted        = "Paystream-Redacted"
	HeaderTruncated       = "Paystream-Truncated"
)

// publishAttemptTimeout bounds one attempt to publish an event, from the
// request to the server's acknowledgement (PubAck).
const publishAttemptTimeout = 5 * time.Second

// admitPoll is how long the pull loop waits before asking Admit again when
// the limit it gave is taken by messages in flight.
const admitPoll = 20 * time.Millisecond

// contentTypeJSON is the Content-Type header value of outcome events; never
// written to.
var contentTypeJSON = []string{"application/json"}

// deadLetterKeep is how much of an oversize body a dead letter keeps.
const deadLetterKeep = 4 * 1024

// ErrShutdownTimeout is the cause given to in-flight work cancelled because
// the shutdown timeout ran out.
var ErrShutdownTimeout = errors.New("shutdown timeout: in-flight work cancelled")

// Consumer pulls payment requests from the durable consumer into a bounded
// pool and acts on each processing decision. Run owns every goroutine it
// starts.
type Consumer struct {
	cfg  Config
	js   jetstream.JetStream
	nc   *nats.Conn // js's connection, for store; nil with a fake js
	proc Processor
	log  zerolog.Logger
	m    *telemetry.Metrics

	mu   sync.Mutex
	cons jetstream.Consumer

	beats *beater // the InProgress heartbeats of fetched messages; set by Run

	lastPull atomic.Int64 // UnixNano of the last pull that ended without error
	idle     atomic.Bool  // the loop waits, by design, for a free slot or for Admit
	failing  atomic.Bool  // pulls are failing; logged once per change

	// Per-message constants and metric children, so that the hot path
	// neither concatenates subjects nor looks labels up per message.
	resultsTemplate string                              // <prefix>.results
	resultSubjects  map[payment.Status]string           // <prefix>.results.<status> of the final statuses
	verdicts        [256]atomic.Pointer[verdictMetrics] // by payment.Verdict, filled on first use
	fetchOK         prometheus.Counter                  // Fetches{result="ok"}
	fetchEmpty      prometheus.Counter                  // Fetches{result="empty"}

	pubErrs     atomic.Int64 // publish attempts failed since the last one that succeeded
	pubRetrying atomic.Int64 // handlers retrying a publish right now
}

// publishFailingAfter is the number of publish attempts in a row that fail
// before the worker reports itself not ready.
const publishFailingAfter = 5

// New returns a Consumer; call Run to start it. Events are published on
// js's connection (js.Conn()) directly, not through js.PublishMsg (see
// store): a JetStream wrapper that overrides PublishMsg is bypassed unless
// its Conn returns nil.
func New(js jetstream.JetStream, cfg Config, proc Processor, logger zerolog.Logger, m *telemetry.Metrics) *Consumer {
	if js == nil || proc == nil || m == nil {
		panic("consumer.New: jetstream, processor and metrics are required")
	}
	if err := cfg.Validate(); err != nil {
		panic("consumer.New: invalid Config: " + err.Error())
	}
	c := &Consumer{cfg: cfg.WithDefaults(), js: js, nc: js.Conn(), proc: proc, m: m,
		log: logger.With().Str("component", "consumer").Logger()}
	c.resultsTemplate = c.cfg.SubjectPrefix + ".results"
	c.resultSubjects = map[payment.Status]string{}
	for _, st := range []payment.Status{payment.StatusSucceeded, payment.StatusDeclined, payment.StatusFailed} {
		c.resultSubjects[st] = c.cfg.ResultSubject(string(st))
	}
	c.fetchOK, c.fetchEmpty = m.Fetches.WithLabelValues("ok"), m.Fetches.WithLabelValues("empty")
	return c
}

// verdictMetrics are the metric children of one verdict.
type verdictMetrics struct {
	messages prometheus.Counter
	duration prometheus.Observer
}

// verdictMetrics returns v's metric children, looking their labels up on
// the first use only (so that no series shows before its first delivery).
func (c *Consumer) verdictMetrics(v payment.Verdict) *verdictMetrics {
	if vm := c.verdicts[v].Load(); vm != nil {
		return vm
	}
	vm := &verdictMetrics{messages: c.m.Messages.WithLabelValues(v.String()),
		duration: c.m.Duration.WithLabelValues(v.String())}
	c.verdicts[v].Store(vm)
	return vm
}

// Config returns the effective configuration.
func (c *Consumer) Config() Config { return c.cfg }

// LastPull returns when the last pull request ended without error; zero
// before the first.
func (c *Consumer) LastPull() time.Time {
	if n := c.lastPull.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Ready reports whether the consumer is bound, its pulls succeed, and its
// outcome events and dead letters get published: a worker that cannot
// announce what it records holds its messages (and slots) until it can.
func (c *Consumer) Ready() error {
	last := c.lastPull.Load()
	if last == 0 {
		return errors.New("consumer not bound yet")
	}
	if n := c.pubErrs.Load(); n >= publishFailingAfter {
		return fmt.Errorf("publishing outcomes and dead letters is failing (%d attempts in a row)", n)
	}
	if n := c.pubRetrying.Load(); n >= int64(c.cfg.Concurrency) {
		return fmt.Errorf("every slot (%d) is waiting to publish an outcome or dead letter", n)
	}
	if c.idle.Load() {
		// Every slot busy, or the breaker open: nothing to pull, and that
		// is no stall.
		return nil
	}
	if age := time.Since(time.Unix(0, last)); age > 3*c.cfg.FetchMaxWait+5*time.Second {
		return fmt.Errorf("no successful pull for %s", age.Round(time.Second))
	}
	return nil
}

func (c *Consumer) consumer(ctx context.Context, rebind bool) (jetstream.Consumer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cons != nil && !rebind {
		return c.cons, nil
	}
	cons, err := c.js.Consumer(ctx, c.cfg.Stream, c.cfg.Consumer)
	if err != nil {
		return nil, fmt.Errorf("bind consumer %s on %s: %w", c.cfg.Consumer, c.cfg.Stream, err)
	}
	c.cons = cons
	return cons, nil
}

// Run pulls and processes messages until ctx ends, then drains: it stops
// pulling, lets in-flight payments finish for up to ShutdownTimeout, cancels
// the rest (they release their leases and nak), and returns once every
// goroutine it started has exited. It returns nil on a normal stop.
func (c *Consumer) Run(ctx context.Context) error {
	workCtx, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(nil)

	var wg sync.WaitGroup
	c.beats = newBeater(c.cfg.AckWait / 3)
	beatCtx, stopBeats := context.WithCancel(context.WithoutCancel(ctx))
	var beating sync.WaitGroup
	beating.Go(func() { c.beats.run(beatCtx) })
	// Every handler has stopped its heartbeat once wg is done.
	defer beating.Wait()
	defer stopBeats()
	// A slot is room for one fetched message: Concurrency of them run, and
	// up to Lookahead more wait in the fair queue (fair.go).
	slots := make(chan struct{}, c.cfg.Concurrency+c.cfg.Lookahead)
	q := newFairQueue(c.cfg.Concurrency, c.cfg.FairMaxHold, func(m held) {
		defer wg.Done()
		defer func() { <-slots }()
		c.handle(workCtx, m.msg, m.hb)
	})
	c.pullLoop(ctx, slots, q, &wg)

	done := make(chan struct{})
	go func() { wg.Wait(); q.wait(); close(done) }()
	timer := time.NewTimer(c.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-done:
		c.log.Info().Msg("drained: all in-flight payments finished")
	case <-timer.C:
		c.log.Warn().Int("in_flight", len(slots)).Dur("shutdown_timeout", c.cfg.ShutdownTimeout).
			Msg("shutdown timeout: cancelling in-flight payments")
		cancelWork(ErrShutdownTimeout)
		<-done
	}
	return nil
}

func (c *Consumer) pullLoop(ctx context.Context, slots chan struct{}, q *fairQueue, wg *sync.WaitGroup) {
	release := func(n int) {
		for range n {
			<-slots
		}
	}
	var pullErrs int
	for {
		// Pull only into free slots, so no message waits in a local buffer
		// while its ack timer runs (docs/contract.md §11.1).
		if ctx.Err() != nil {
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			c.idle.Store(true)
			select {
			case slots <- struct{}{}:
				c.idle.Store(false)
			case <-ctx.Done():
				return
			}
		}
		n := 1
	more:
		for n < c.cfg.MaxFetch {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		limit, wait := c.proc.Admit()
		if limit > 0 {
			// A positive limit caps the messages in flight, not only this
			// pull (a half-open breaker admits its one probe): count the
			// ones still running.
			limit -= len(slots) - n
			if limit <= 0 {
				limit, wait = 0, admitPoll
			}
		}
		if limit == 0 {
			release(n)
			c.idle.Store(true)
			ok := sleep(ctx, wait)
			c.idle.Store(false)
			if !ok {
				return
			}
			continue
		}
		if limit > 0 && n > limit {
			release(n - limit)
			n = limit
		}
		got, err := c.pull(ctx, n, q, wg)
		release(n - got)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			pullErrs++
			if !c.failing.Swap(true) {
				c.log.Error().Err(err).Msg("pull failing; retrying")
			}
			c.m.Fetches.WithLabelValues("error").Inc()
			if !sleep(ctx, processing.Backoff(100*time.Millisecond, 5*time.Second, uint64(min(pullErrs, 30)))) {
				return
			}
			continue
		}
		pullErrs = 0
		c.lastPull.Store(time.Now().UnixNano())
		if c.failing.Swap(false) {
			c.log.Info().Msg("pull recovered")
		}
	}
}

// pull runs one pull request for up to n messages and hands each, holding
// one of the n reserved slots, to the fair queue; it returns how many it got.
func (c *Consumer) pull(ctx context.Context, n int, q *fairQueue, wg *sync.WaitGroup) (int, error) {
	cons, err := c.consumer(ctx, false)
	if err != nil {
		return 0, err
	}
	fctx, cancel := context.WithTimeout(ctx, c.cfg.FetchMaxWait)
	defer cancel()
	batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		return 0, c.pullError(ctx, err)
	}
	got := 0
	for msg := range batch.Messages() {
		got++
		wg.Add(1)
		// The heartbeat starts at fetch: the ack timer runs from there.
		q.push(held{msg: msg, hb: c.beats.start(msg), merchant: merchantOf(msg.Subject())})
	}
	if got == 0 {
		c.fetchEmpty.Inc()
	} else {
		c.fetchOK.Inc()
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.Canceled) {
		return got, c.pullError(ctx, err)
	}
	return got, nil
}

func (c *Consumer) pullError(ctx context.Context, err error) error {
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrStreamNotFound) {
		// The server lost the consumer (a new store, a leader change):
		// bind again on the next pull.
		if _, bindErr := c.consumer(ctx, true); bindErr != nil {
			return fmt.Errorf("pull: %w (rebind: %w)", err, bindErr)
		}
	}
	return fmt.Errorf("pull: %w", err)
}

// handle processes one message and acts on the decision; hb is its
// heartbeat, running since the fetch, which handle stops.
func (c *Consumer) handle(ctx context.Context, msg jetstream.Msg, hb *heartbeat) {
	defer hb.stop()
	start := time.Now()
	c.m.InFlight.Inc()
	defer c.m.InFlight.Dec()

	md, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to process or acknowledge.
		c.log.Error().Err(err).Str("subject", msg.Subject()).Msg("message without JetStream metadata")
		return
	}
	if md.NumDelivered > 1 {
		c.m.Redeliveries.Inc()
	}
	ctx, span := c.startProcess(ctx, msg, md)

	d := c.proc.Process(ctx, processing.Message{
		Subject:      msg.Subject(),
		Data:         msg.Data(),
		StreamSeq:    md.Sequence.Stream,
		NumDelivered: md.NumDelivered,
	})
	v := c.act(ctx, msg, md, d)
	endProcess(span, v, d)
	vm := c.verdictMetrics(v)
	vm.messages.Inc()
	telemetry.ObserveWithTrace(ctx, vm.duration, time.Since(start).Seconds())
}

// act carries out a decision: outcome events and dead letters are published
// before the message is acked or terminated; if a publish fails the message
// is nak'ed, never dropped. It returns the verdict to count: the decision's,
// or VerdictPublishFailed.
func (c *Consumer) act(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, d processing.Decision) payment.Verdict {
	// Each log line carries the message's fields, added to the event (a
	// disabled level costs nothing) rather than to a logger built per
	// message.
	log := func(e *zerolog.Event) *zerolog.Event {
		return e.Str("payment_id", d.PaymentID).Str("idempotency_key", d.Key).
			Uint64("stream_seq", md.Sequence.Stream).Uint64("deliveries", md.NumDelivered)
	}
	last := md.NumDelivered >= uint64(c.cfg.MaxDeliver)
	var ackErr error
	switch d.Action {
	case processing.ActionAck:
		if d.Outcome != nil {
			if err := c.publishOutcome(ctx, *d.Outcome, last); err != nil {
				log(c.log.Warn()).Err(err).Msg("publish outcome failed: nak")
				c.nak(msg, md)
				return payment.VerdictPublishFailed
			}
		}
		ackErr = c.settle(ctx, msg, "ack", d)
		log(c.log.Debug()).Stringer("outcome", d.Verdict).Msg("acked")
	case processing.ActionRetry:
		ackErr = c.settle(ctx, msg, "nak", d)
		log(logAt(c.log, d.Verdict.Severity())).Err(d.Err).Stringer("outcome", d.Verdict).Dur("delay", d.Delay).Msg("retry later")
	case processing.ActionTerm:
		if d.DeadLetter == nil {
			log(c.log.Error()).Msg("term without a dead letter: nak instead")
			c.nak(msg, md)
			return payment.VerdictPublishFailed
		}
		if err := c.publishDeadLetter(ctx, msg, md, *d.DeadLetter, last); err != nil {
			log(c.log.Error()).Err(err).Msg("publish dead letter failed: nak")
			c.nak(msg, md)
			return payment.VerdictPublishFailed
		}
		c.m.DeadLetters.WithLabelValues(string(d.DeadLetter.Reason)).Inc()
		if d.Outcome != nil {
			if err := c.publishOutcome(ctx, *d.Outcome, last); err != nil {
				// The dead letter is out and the row final: the redelivery's
				// claim finds it a duplicate (same message) and publishes
				// both again under the same message ids.
				log(c.log.Warn()).Err(err).Msg("publish outcome failed: nak")
				c.nak(msg, md)
				return payment.VerdictPublishFailed
			}
		}
		ackErr = c.settle(ctx, msg, "term", d)
		log(logAt(c.log, d.DeadLetter.Reason.Severity())).
			Str("reason", string(d.DeadLetter.Reason)).Str("error", d.DeadLetter.Error).Msg("dead-lettered")
	default:
		log(c.log.Error()).Int("action", int(d.Action)).Msg("unknown action: nak")
		c.nak(msg, md)
		return payment.VerdictPublishFailed
	}
	if ackErr != nil {
		// Ack and nak are fire-and-forget; a lost one is a redelivery that
		// the idempotency table absorbs.
		log(c.log.Warn()).Err(ackErr).Stringer("outcome", d.Verdict).Msg("acknowledge")
	}
	return d.Verdict
}

// logAt starts a log event at the level of a verdict's severity.
func logAt(log zerolog.Logger, s payment.Severity) *zerolog.Event {
	switch s {
	case payment.SeverityAlert:
		return log.Error()
	case payment.SeverityNotice:
		return log.Warn()
	default:
		return log.Debug()
	}
}

func (c *Consumer) nak(msg jetstream.Msg, md *jetstream.MsgMetadata) {
	_ = msg.NakWithDelay(processing.Backoff(c.cfg.RetryBackoff, c.cfg.RetryBackoffMax, md.NumDelivered))
}

// publishOutcome announces a final row on <prefix>.results.<status>.
func (c *Consumer) publishOutcome(ctx context.Context, o payment.Outcome, last bool) error {
	body, err := o.AppendJSON(make([]byte, 0, 320))
	if err != nil {
		return fmt.Errorf("encode outcome %s: %w", o.IdempotencyKey, err)
	}
	subject, ok := c.resultSubjects[o.Status]
	if !ok {
		subject = c.cfg.ResultSubject(string(o.Status))
	}
	// The header as nats.NewMsg and Header.Set make it, in one map; the
	// content type's value is shared (capacity 1: an append copies it),
	// with room for a trace context.
	m := &nats.Msg{Subject: subject, Data: body, Header: make(nats.Header, 3)}
	m.Header[jetstream.MsgIDHeader] = []string{o.MsgID()}
	m.Header["Content-Type"] = contentTypeJSON[:1:1]
	return c.send(ctx, c.resultsTemplate, m, last)
}

// publishDeadLetter publishes the original body, masked and truncated as the
// contract says, with the dead-letter headers.
func (c *Consumer) publishDeadLetter(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, dl processing.DeadLetter, last bool) error {
	m := deadLetterMsg(c.cfg.DLQSubject(string(dl.Reason)), msg.Subject(), msg.Data(), dl)
	m.Header.Set(jetstream.MsgIDHeader, "dlq-"+c.cfg.Stream+"-"+strconv.FormatUint(md.Sequence.Stream, 10))
	m.Header.Set(HeaderStreamSeq, strconv.FormatUint(md.Sequence.Stream, 10))
	m.Header.Set(HeaderDeliveries, strconv.FormatUint(md.NumDelivered, 10))
	return c.send(ctx, c.cfg.SubjectPrefix+".dlq", m, last)
}

// PublishDeadLetter dead-letters a stored request that no delivery holds
// (the sweeper's settling of a request that no longer validates), with
// message id msgID; it has no stream sequence or delivery count headers.
func (c *Consumer) PublishDeadLetter(ctx context.Context, subject string, body []byte, dl processing.DeadLetter, msgID string) error {
	m := deadLetterMsg(c.cfg.DLQSubject(string(dl.Reason)), subject, body, dl)
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	return c.send(ctx, c.cfg.SubjectPrefix+".dlq", m, false)
}

// PublishOutcome announces a final row (the reconciler's and sweeper's
// settlements) and returns once the server stored it.
func (c *Consumer) PublishOutcome(ctx context.Context, o payment.Outcome) error {
	return c.publishOutcome(ctx, o, false)
}

// deadLetterMsg builds a dead letter of body, first published on subject:
// masked and truncated as the contract says, with the reason headers.
func deadLetterMsg(dlqSubject, subject string, body []byte, dl processing.DeadLetter) *nats.Msg {
	m := nats.NewMsg(dlqSubject)
	size := len(body)
	// Mask before cutting: a card number split by the cut would no longer
	// look like one. Masking covers escaped digits and may change the
	// length, so the cut depends on the original length.
	if masked, changed := payment.MaskCardNumbersJSON(body); changed {
		body = masked
		m.Header.Set(HeaderRedacted, "true")
	}
	if size > payment.MaxBodyBytes {
		body = body[:min(deadLetterKeep, len(body))]
		m.Header.Set(HeaderTruncated, "true")
		// And mask after: the cut may end a run of digits early and make
		// a card number of its head.
		if masked, changed := payment.MaskCardNumbersJSON(body); changed {
			body = masked
			m.Header.Set(HeaderRedacted, "true")
		}
	}
	m.Data = body
	m.Header.Set(HeaderDLQReason, string(dl.Reason))
	m.Header.Set(HeaderDLQError, headerSafe(dl.Error))
	m.Header.Set(HeaderOriginalSubject, subject)
	return m
}

// Republish publishes a stored request again (the sweeper's rescue). It
// gives up when ctx ends.
func (c *Consumer) Republish(ctx context.Context, subject string, body []byte, msgID string) error {
	m := nats.NewMsg(subject)
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	m.Header.Set("Content-Type", "application/json")
	m.Data = body
	return c.send(ctx, c.cfg.SubjectPrefix+".requests", m, false)
}

// publish publishes m and waits for the server's ack, retrying failures
// for up to AckWait/2 (the heartbeat keeps the message meanwhile). On a
// message's last delivery it keeps trying while the worker runs, since a nak
// would cost the safety delivery.
//
// Once ctx has ended (the hard stop, or a stopping sweeper) it makes one
// more attempt at most, so that every stop is bounded: the attempt under
// way when the stop came may still land, and a nak (or the next sweep)
// covers the rest.
func (c *Consumer) publish(ctx context.Context, m *nats.Msg, persist bool) error {
	deadline := time.Now().Add(c.cfg.AckWait / 2)
	for i := uint64(1); ; i++ {
		stopped := ctx.Err() != nil
		err := c.store(ctx, m, publishAttemptTimeout)
		if err == nil {
			c.pubErrs.Store(0)
			return nil
		}
		c.pubErrs.Add(1)
		if stopped || (time.Now().After(deadline) && (!persist || ctx.Err() != nil)) {
			return fmt.Errorf("publish to %s: %w", m.Subject, err)
		}
		if i == 1 {
			c.pubRetrying.Add(1)
			defer c.pubRetrying.Add(-1)
		}
		// A stop during the wait cuts it short: one last attempt follows.
		sleep(ctx, processing.Backoff(50*time.Millisecond, 2*time.Second, i))
	}
}

// headerSafe makes s fit a NATS header value: one line, bounded.
func headerSafe(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if ch == '\r' || ch == '\n' {
			b[i] = ' '
		}
	}
	if len(b) > 512 {
		b = append(b[:509], "..."...)
	}
	return string(b)
}

// sleep waits for d or ctx; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// beater sends InProgress for every fetched message every interval from its
// fetch until the message's heartbeat is stopped, so a payment that runs
// long keeps its message (docs/contract.md §6 step 4). One goroutine and one
// timer serve all messages: since every heartbeat has the same interval,
// their due times are in the order they were started and beaten, and a
// list in that order (the earliest due first) is all the scheduling needed.
// A message costs one small node, not a timer and a goroutine of its own.
type beater struct {
	interval time.Duration
	kick     chan struct{} // wakes run when the list was empty and got a node

	mu         sync.Mutex
	head, tail *heartbeat // by due time, the earliest first
}

// heartbeat is one message's place in its beater's list.
type heartbeat struct {
	b          *beater
	msg        jetstream.Msg
	due        time.Time
	prev, next *heartbeat
	linked     bool
}

func newBeater(interval time.Duration) *beater {
	return &beater{interval: max(interval, time.Millisecond), kick: make(chan struct{}, 1)}
}

// start starts msg's heartbeat: its first InProgress goes one interval from
// now.
func (b *beater) start(msg jetstream.Msg) *heartbeat {
	h := &heartbeat{b: b, msg: msg}
	b.mu.Lock()
	h.due = time.Now().Add(b.interval)
	wasEmpty := b.head == nil
	b.pushLocked(h)
	b.mu.Unlock()
	if wasEmpty {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return h
}

func (b *beater) pushLocked(h *heartbeat) {
	h.prev, h.next, h.linked = b.tail, nil, true
	if b.tail != nil {
		b.tail.next = h
	} else {
		b.head = h
	}
	b.tail = h
}

func (b *beater) unlinkLocked(h *heartbeat) {
	if h.prev != nil {
		h.prev.next = h.next
	} else {
		b.head = h.next
	}
	if h.next != nil {
		h.next.prev = h.prev
	} else {
		b.tail = h.prev
	}
	h.prev, h.next, h.linked = nil, nil, false
}

// stop stops the heartbeat; no InProgress for its message follows once it
// returns (beats are sent under the beater's lock).
func (h *heartbeat) stop() {
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	if h.linked {
		h.b.unlinkLocked(h)
	}
}

// run beats the messages that are due until ctx ends.
func (b *beater) run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		if wait, ok := b.beatDue(); ok {
			t.Reset(wait)
		} else {
			t.Stop()
		}
		select {
		case <-t.C:
		case <-b.kick:
		case <-ctx.Done():
			return
		}
	}
}

// beatDue sends InProgress for every message due, moves each to the back
// with its next due time, and returns how long until the next is due
// (false: none).
func (b *beater) beatDue() (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	for h := b.head; h != nil && !h.due.After(now); h = b.head {
		_ = h.msg.InProgress()
		b.unlinkLocked(h)
		h.due = now.Add(b.interval)
		b.pushLocked(h)
	}
	if b.head == nil {
		return 0, false
	}
	return b.head.due.Sub(now), true
}
