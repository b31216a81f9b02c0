package natsconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/natstest"
)

// heldConn is the network under a coalescingConn: each Write is recorded,
// announced on entered, and then waits for release to say how it ends
// (nil: written) or for Close. Reads wait for Close. Write deadlines are
// recorded.
type heldConn struct {
	net.Conn // unused: only the methods below are called
	entered  chan []byte
	release  chan error
	closedCh chan struct{}

	mu        sync.Mutex
	writes    []string
	deadlines []time.Time
	closed    bool
}

func newHeldConn() *heldConn {
	return &heldConn{entered: make(chan []byte, 16), release: make(chan error, 16), closedCh: make(chan struct{})}
}

func (h *heldConn) Write(p []byte) (int, error) {
	h.entered <- bytes.Clone(p)
	select {
	case err := <-h.release:
		if err != nil {
			return 0, err
		}
	case <-h.closedCh:
		return 0, net.ErrClosed
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, net.ErrClosed
	}
	h.writes = append(h.writes, string(p))
	return len(p), nil
}

func (h *heldConn) Read([]byte) (int, error) {
	<-h.closedCh
	return 0, net.ErrClosed
}

func (h *heldConn) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return net.ErrClosed
	}
	h.closed = true
	close(h.closedCh)
	return nil
}

func (h *heldConn) SetWriteDeadline(t time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.deadlines = append(h.deadlines, t)
	return nil
}

func (h *heldConn) SetReadDeadline(time.Time) error { return nil }

func (h *heldConn) written() ([]string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.writes...), h.closed
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	n, err := c.Write([]byte(s))
	require.NoError(t, err)
	require.Equal(t, len(s), n)
}

// within fails the test unless ch yields within a minute: a guard against
// a hang, not a measurement.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(time.Minute):
		t.Fatalf("%s: still waiting after a minute", what)
		panic("unreachable")
	}
}

// TestCoalescingConnWritesWhatWaitedInOne: what is written while the
// writer is busy goes out in its next write, whole and in order.
func TestCoalescingConnWritesWhatWaitedInOne(t *testing.T) {
	h := newHeldConn()
	c := newCoalescingConn(h, 1<<20, time.Minute, time.Minute)

	write(t, c, "PUB a 1\r\n")
	require.Equal(t, "PUB a 1\r\n", string(<-h.entered), "the first write goes out alone")
	var want strings.Builder
	for i := range 50 {
		s := fmt.Sprintf("PUB b.%d 2\r\nok\r\n", i)
		want.WriteString(s)
		write(t, c, s)
	}
	h.release <- nil
	require.Equal(t, want.String(), string(<-h.entered), "the 50 writes made while the first was under way go out in one")
	h.release <- nil

	require.NoError(t, c.Close())
	writes, closed := h.written()
	require.Equal(t, []string{"PUB a 1\r\n", want.String()}, writes)
	require.True(t, closed)
}

// TestCoalescingConnBoundsEachWrite: the writer bounds each of its writes
// by its own timeout; the deadlines nats.go sets around its Writes do not
// reach the connection (nats.go's clearing one after a Write would lift
// the writer's bound).
func TestCoalescingConnBoundsEachWrite(t *testing.T) {
	h := newHeldConn()
	const writeTimeout = 42 * time.Second
	c := newCoalescingConn(h, 1<<20, writeTimeout, time.Minute)
	require.NoError(t, c.SetWriteDeadline(time.Now().Add(time.Second)))
	require.NoError(t, c.SetDeadline(time.Now().Add(time.Second)))
	before := time.Now()
	write(t, c, "PING\r\n")
	<-h.entered
	after := time.Now()
	require.NoError(t, c.SetWriteDeadline(time.Time{}))
	h.release <- nil
	require.NoError(t, c.Close())

	h.mu.Lock()
	deadlines := h.deadlines
	h.mu.Unlock()
	require.Len(t, deadlines, 1, "only the writer sets write deadlines")
	require.False(t, deadlines[0].Before(before.Add(writeTimeout)), "the write is bounded by writeTimeout")
	require.False(t, deadlines[0].After(after.Add(writeTimeout)), "the write is bounded by writeTimeout")
}

// TestCoalescingConnCloseWritesTheBuffer: Close writes what nats.go wrote
// before it (its last flush), then closes; a write after Close fails.
func TestCoalescingConnCloseWritesTheBuffer(t *testing.T) {
	h := newHeldConn()
	c := newCoalescingConn(h, 1<<20, time.Minute, time.Minute)
	write(t, c, "ACK 1")
	<-h.entered
	write(t, c, "ACK 2")

	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	h.release <- nil
	require.Equal(t, "ACK 2", string(<-h.entered))
	h.release <- nil
	require.NoError(t, within(t, closed, "Close"))

	writes, isClosed := h.written()
	require.Equal(t, []string{"ACK 1", "ACK 2"}, writes)
	require.True(t, isClosed)
	_, err := c.Write([]byte("late"))
	require.ErrorIs(t, err, net.ErrClosed)
}

// TestCoalescingConnCloseIsBounded: a write that does not finish (a peer
// that stopped reading) holds Close for closeTimeout at most: Close then
// closes the connection under it.
func TestCoalescingConnCloseIsBounded(t *testing.T) {
	h := newHeldConn()
	c := newCoalescingConn(h, 1<<20, time.Hour, 10*time.Millisecond)
	write(t, c, "PUB stuck 1\r\nx\r\n")
	<-h.entered // the writer is in a write that nobody releases
	write(t, c, "PUB stuck 1\r\ny\r\n")
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	require.NoError(t, within(t, closed, "Close of a connection whose write does not finish"))
	writes, isClosed := h.written()
	require.Empty(t, writes)
	require.True(t, isClosed)
}

// TestCoalescingConnWriteErrorFailsTheConnection: a failed write fails
// every later Write, a Write waiting for room included, closes the
// connection so that nats.go's read loop notices and reconnects, and is
// what that read reports.
func TestCoalescingConnWriteErrorFailsTheConnection(t *testing.T) {
	h := newHeldConn()
	c := newCoalescingConn(h, 4, time.Minute, time.Minute)
	reading := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 16))
		reading <- err
	}()
	write(t, c, "aaaa")
	<-h.entered
	write(t, c, "bbbb") // the buffer is full now
	waiting := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("cccc"))
		waiting <- err
	}()
	broken := errors.New("connection reset by peer")
	h.release <- broken
	require.ErrorIs(t, within(t, waiting, "the waiting Write"), broken)
	_, err := c.Write([]byte("dddd"))
	require.ErrorIs(t, err, broken)
	within(t, h.closedCh, "the writer closing the connection")
	require.ErrorIs(t, within(t, reading, "the Read"), broken, "the read reports the write that failed")

	require.NoError(t, c.Close(), "Close after the writer closed the connection")
	writes, _ := h.written()
	require.Empty(t, writes)
}

// TestCoalescingConnBoundsItsBuffer: while bufferMax bytes wait, a Write
// waits until the writer takes them (not until it has written them), so
// no write exceeds the bound; one larger than it goes out alone.
func TestCoalescingConnBoundsItsBuffer(t *testing.T) {
	h := newHeldConn()
	c := newCoalescingConn(h, 8, time.Minute, time.Minute)
	write(t, c, "aaaa")
	<-h.entered
	write(t, c, "bbbb")
	write(t, c, "cccc") // 8 bytes wait: the bound
	third := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("dddd"))
		third <- err
	}()
	h.release <- nil
	require.Equal(t, "bbbbcccc", string(<-h.entered))
	require.NoError(t, within(t, third, "the Write waiting for room"), "it returns once the writer took the buffer")
	h.release <- nil
	require.Equal(t, "dddd", string(<-h.entered), "the waiting write went into the next buffer")
	h.release <- nil
	write(t, c, "0123456789")
	require.Equal(t, "0123456789", string(<-h.entered), "a write larger than the bound is taken whole")
	h.release <- nil
	require.NoError(t, c.Close())
	writes, _ := h.written()
	require.Equal(t, []string{"aaaa", "bbbbcccc", "dddd", "0123456789"}, writes)
}

// TestCoalesceWritesInstallsTheDialer: CoalesceWrites dials with the
// settings of the options given to Connect, whatever their order, and
// leaves a caller's own dialer alone.
func TestCoalesceWritesInstallsTheDialer(t *testing.T) {
	apply := func(o Options, extra ...nats.Option) nats.Options {
		no := nats.GetDefaultOptions()
		for _, opt := range o.connectOptions(extra) {
			require.NoError(t, opt(&no))
		}
		return no
	}
	no := apply(Options{CoalesceWrites: true}, nats.Timeout(3*time.Second), nats.FlusherTimeout(7*time.Second))
	d, ok := no.CustomDialer.(*coalescingDialer)
	require.True(t, ok, "CoalesceWrites installs the coalescing dialer")
	require.Equal(t, 3*time.Second, d.dialer.Timeout)
	require.Equal(t, 7*time.Second, d.writeTimeout)

	d, ok = apply(Options{CoalesceWrites: true}).CustomDialer.(*coalescingDialer)
	require.True(t, ok)
	require.Equal(t, nats.DefaultTimeout, d.dialer.Timeout)
	require.Equal(t, nats.DefaultFlusherTimeout, d.writeTimeout)

	d, ok = apply(Options{CoalesceWrites: true}, nats.Timeout(3*time.Second),
		nats.Dialer(&net.Dialer{Timeout: 5 * time.Second, KeepAlive: time.Minute})).CustomDialer.(*coalescingDialer)
	require.True(t, ok)
	require.Equal(t, 5*time.Second, d.dialer.Timeout, "a nats.Dialer brings its own timeout, as in nats.go")
	require.Equal(t, time.Minute, d.dialer.KeepAlive)

	require.Nil(t, apply(Options{}).CustomDialer, "no coalescing unless asked")
	own := &net.Dialer{}
	require.Same(t, own, apply(Options{CoalesceWrites: true}, nats.SetCustomDialer(own)).CustomDialer,
		"a caller's dialer is kept")
}

// TestCoalescingConnWithJetStream publishes through a real server from
// many goroutines at once, as the worker's handlers do: every publish is
// stored (PubAck), every core message arrives, each publisher's in its
// order, and closing leaves no goroutine behind (TestMain's goleak).
func TestCoalescingConnWithJetStream(t *testing.T) {
	srv := natstest.New(t)
	d := newCoalescingDialer(nats.GetDefaultOptions())
	nc, err := Connect(Options{URLs: []string{srv.URL()}}, nats.SetCustomDialer(d))
	require.NoError(t, err)
	defer nc.Close()
	require.EqualValues(t, 1, d.dialed.Load(), "the connection coalesces")
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "COALESCE", Subjects: []string{"stored.>"}})
	require.NoError(t, err)

	const publishers, each = 64, 40
	got := make(chan *nats.Msg, publishers*each)
	sub, err := nc.ChanSubscribe("core.>", got)
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	require.NoError(t, nc.Flush())

	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				if _, err := js.Publish(ctx, fmt.Sprintf("stored.%d", p), fmt.Appendf(nil, "%d", i),
					jetstream.WithMsgID(fmt.Sprintf("%d-%d", p, i))); err != nil {
					errs <- err
					return
				}
				if err := nc.Publish(fmt.Sprintf("core.%d", p), fmt.Appendf(nil, "%d", i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	info, err := js.Stream(ctx, "COALESCE")
	require.NoError(t, err)
	require.EqualValues(t, publishers*each, info.CachedInfo().State.Msgs, "every publish stored once")

	next := make(map[string]int)
	for range publishers * each {
		select {
		case m := <-got:
			require.Equal(t, fmt.Sprint(next[m.Subject]), string(m.Data), "in order on %s", m.Subject)
			next[m.Subject]++
		case <-ctx.Done():
			t.Fatalf("%d core messages arrived of %d", len(next), publishers*each)
		}
	}
	require.Len(t, next, publishers)
}

// BenchmarkJetStreamPublishFromManyGoroutines publishes to a JetStream
// stream and waits for each PubAck from 128 goroutines per processor, as
// the worker's handlers store their outcome events: without and with
// write coalescing, in one run (make bench prints both). The stream is in
// memory, so that the figure is the connection's and the server's work,
// not the disk's.
func BenchmarkJetStreamPublishFromManyGoroutines(b *testing.B) {
	for _, coalesce := range []bool{false, true} {
		name := "direct"
		if coalesce {
			name = "coalesced"
		}
		b.Run(name, func(b *testing.B) {
			srv := natstest.New(b)
			nc, err := Connect(Options{URLs: []string{srv.URL()}, CoalesceWrites: coalesce})
			require.NoError(b, err)
			defer nc.Close()
			js, err := jetstream.New(nc)
			require.NoError(b, err)
			_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{
				Name: "BENCH", Subjects: []string{"bench.>"}, Storage: jetstream.MemoryStorage, MaxMsgs: 100_000,
			})
			require.NoError(b, err)
			body := bytes.Repeat([]byte("x"), 300) // an outcome event's size
			b.SetParallelism(128)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				m := &nats.Msg{Subject: "bench.results", Data: body}
				for pb.Next() {
					resp, err := nc.RequestMsg(m, 10*time.Second)
					if err != nil {
						b.Error(err)
						return
					}
					if err := pubAckCheck(resp.Data); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// pubAckCheck reports a PubAck that says the message was not stored.
func pubAckCheck(data []byte) error {
	if !bytes.HasPrefix(data, []byte(`{"stream":"BENCH"`)) {
		return fmt.Errorf("not stored: %s", data)
	}
	return nil
}

// TestCoalescingConnLeavesNothingWhenDropped: nats.go drops a connection
// whose handshake fails while reconnecting without closing it (a server,
// or a proxy, that accepts and then hangs up), and leaves the socket to
// its finalizer. A coalescing connection must not keep it alive: its
// writer runs only while there is something to write.
func TestCoalescingConnLeavesNothingWhenDropped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var accepted atomic.Int64
	var serving sync.WaitGroup
	serving.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			// INFO, then read what the client sends (its CONNECT and PING)
			// and hang up without a PONG.
			// (The read is bounded, so that a client that sends nothing
			// cannot hold the server's goroutine and the test's end.)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = c.Write([]byte(`INFO {"server_id":"hangs-up","version":"2.15.2","proto":1,"max_payload":1048576}` + "\r\n"))
			_, _ = c.Read(make([]byte, 4096))
			_ = c.Close()
		}
	})
	defer func() {
		_ = ln.Close()
		serving.Wait()
	}()

	d := newCoalescingDialer(nats.GetDefaultOptions())
	nc, err := Connect(Options{URLs: []string{"nats://" + ln.Addr().String()}},
		nats.SetCustomDialer(d), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Millisecond), nats.ReconnectJitter(0, 0))
	require.NoError(t, err)
	defer nc.Close()
	require.Eventually(t, func() bool { return accepted.Load() >= 20 }, time.Minute, time.Millisecond,
		"the client keeps reconnecting")
	// No more connections: each dropped one wrote its CONNECT and PING, and
	// a writer that outlived its buffer would be a goroutine per connection
	// for good.
	_ = ln.Close()
	require.Eventually(t, func() bool { return countWriters() == 0 }, 10*time.Second, time.Millisecond,
		"the writers of dropped connections end: %d left", countWriters())
	require.GreaterOrEqual(t, d.dialed.Load(), int64(20), "the connections were coalescing")
}

// countWriters counts the goroutines running a coalescing connection's
// writer.
func countWriters() int {
	buf := make([]byte, 1<<22)
	n := runtime.Stack(buf, true)
	return bytes.Count(buf[:n], []byte("(*coalescingConn).run("))
}

// gatedClose is a heldConn whose Close waits for gate: the writer that
// failed is then held inside closing the connection.
type gatedClose struct {
	*heldConn
	closing     chan struct{} // closed when Close is first called
	gate        chan struct{}
	once        sync.Once
	closeReturn atomic.Bool // a Close has returned
}

func (g *gatedClose) Close() error {
	g.once.Do(func() { close(g.closing) })
	<-g.gate
	defer g.closeReturn.Store(true)
	return g.heldConn.Close()
}

// TestCoalescingConnCloseWaitsForAFailedWriter: the writer whose write
// failed closes the connection and ends; Close called meanwhile returns
// only after it has, so that no goroutine outlives Close.
func TestCoalescingConnCloseWaitsForAFailedWriter(t *testing.T) {
	h := newHeldConn()
	g := &gatedClose{heldConn: h, closing: make(chan struct{}), gate: make(chan struct{})}
	var open sync.Once
	openGate := func() { open.Do(func() { close(g.gate) }) }
	t.Cleanup(openGate)
	c := newCoalescingConn(g, 1<<20, time.Minute, time.Minute)
	write(t, c, "aaaa")
	<-h.entered
	h.release <- errors.New("broken pipe")
	within(t, g.closing, "the writer closing the connection")

	type result struct {
		writers     int
		connClosed  bool
		closeErrMsg string
	}
	res := make(chan result, 1)
	go func() {
		err := c.Close()
		r := result{writers: countWriters(), connClosed: g.closeReturn.Load()}
		if err != nil {
			r.closeErrMsg = err.Error()
		}
		res <- r
	}()
	// Either Close returned (while the writer is still held in closing the
	// connection), or it waits for the writer: then let the writer go.
	require.Eventually(t, func() bool { return len(res) > 0 || closeBlocked() }, time.Minute, time.Millisecond)
	openGate()
	r := within(t, res, "Close")
	require.Zero(t, r.writers, "no writer runs once Close returned")
	require.True(t, r.connClosed, "the connection was closed before Close returned")
	require.Empty(t, r.closeErrMsg)
}

// closeBlocked reports whether a goroutine waits inside a coalescing
// connection's Close.
func closeBlocked() bool {
	buf := make([]byte, 1<<22)
	n := runtime.Stack(buf, true)
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "(*coalescingConn).Close") &&
			(strings.Contains(g, "[select") || strings.Contains(g, "[chan receive")) {
			return true
		}
	}
	return false
}
