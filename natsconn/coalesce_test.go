package natsconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/natstest"
)

// heldConn is the network under a coalescingConn: each Write is recorded,
// announced on entered, and then waits for release to say how it ends
// (nil: written).
type heldConn struct {
	net.Conn // unused: only Write, Close and the deadlines are called
	entered  chan []byte
	release  chan error

	mu     sync.Mutex
	writes []string
	closed bool
}

func newHeldConn() *heldConn {
	return &heldConn{entered: make(chan []byte, 16), release: make(chan error, 16)}
}

func (h *heldConn) Write(p []byte) (int, error) {
	h.entered <- bytes.Clone(p)
	if err := <-h.release; err != nil {
		return 0, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, net.ErrClosed
	}
	h.writes = append(h.writes, string(p))
	return len(p), nil
}

func (h *heldConn) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	return nil
}

func (h *heldConn) SetWriteDeadline(time.Time) error { return nil }
func (h *heldConn) SetReadDeadline(time.Time) error  { return nil }

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
	require.NoError(t, <-closed)

	writes, isClosed := h.written()
	require.Equal(t, []string{"ACK 1", "ACK 2"}, writes)
	require.True(t, isClosed)
	_, err := c.Write([]byte("late"))
	require.ErrorIs(t, err, net.ErrClosed)
}

// TestCoalescingConnCloseIsBounded: a write that never finishes (a peer
// that stopped reading) does not hold Close beyond its timeout: Close
// closes the connection under it.
func TestCoalescingConnCloseIsBounded(t *testing.T) {
	client, server := net.Pipe() // nobody reads server: every write blocks
	defer server.Close()
	c := newCoalescingConn(client, 1<<20, time.Minute, 0)
	write(t, c, "PUB stuck 1\r\nx\r\n")
	write(t, c, "PUB stuck 1\r\ny\r\n")
	require.NoError(t, c.Close(), "Close returns though the write under way never finishes")
	_, err := server.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the connection is closed")
}

// TestCoalescingConnWriteErrorFailsTheConnection: a failed write fails
// every later Write, a Write waiting for room included, and closes the
// connection so that nats.go's read loop notices and reconnects.
func TestCoalescingConnWriteErrorFailsTheConnection(t *testing.T) {
	h := newHeldConn()
	c := newCoalescingConn(h, 4, time.Minute, time.Minute)
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
	require.ErrorIs(t, <-waiting, broken)
	_, err := c.Write([]byte("dddd"))
	require.ErrorIs(t, err, broken)
	// The writer has stopped: Close returns at once.
	require.NoError(t, c.Close())
	writes, closed := h.written()
	require.Empty(t, writes)
	require.True(t, closed)
}

// TestCoalescingConnBoundsItsBuffer: while bufferMax bytes wait, a Write
// waits for the writer to take them, so no write exceeds the bound (one
// larger than it goes out alone).
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
	h.release <- nil
	require.NoError(t, <-third)
	require.Equal(t, "dddd", string(<-h.entered), "the waiting write went into the next buffer")
	h.release <- nil
	write(t, c, "0123456789")
	require.Equal(t, "0123456789", string(<-h.entered), "a write larger than the bound is taken whole")
	h.release <- nil
	require.NoError(t, c.Close())
	writes, _ := h.written()
	require.Equal(t, []string{"aaaa", "bbbbcccc", "dddd", "0123456789"}, writes)
}

// TestCoalescingConnWithJetStream publishes through a real server from
// many goroutines at once, as the worker's handlers do: every publish is
// stored (PubAck), every core message arrives, each publisher's in its
// order, and closing leaves no goroutine behind (TestMain's goleak).
func TestCoalescingConnWithJetStream(t *testing.T) {
	srv := natstest.New(t)
	nc, err := Connect(Options{URLs: []string{srv.URL()}, CoalesceWrites: true})
	require.NoError(t, err)
	defer nc.Close()
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
