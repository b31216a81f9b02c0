package natsconn

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Write coalescing (Options.CoalesceWrites).
//
// nats.go buffers what a connection sends and has one flusher goroutine
// write it out: every publish, ack or pull request wakes the flusher, and
// the Go scheduler runs a goroutine it has just woken next. In a worker
// where hundreds of handlers finish a batch at once, each handler's publish
// (or ack) mostly reached the socket in a write of its own: 0.55 write
// system calls per payment in the benchmark, and nats-server's read loop
// woke 0.18 times per payment, against 0.05 for the benchmark's floor,
// which publishes a batch from one goroutine. Nagle's algorithm (TCP_NODELAY off) is no remedy: it still
// makes every write a system call, and holding back small writes until
// the last one is acknowledged cost 16 % of the throughput in the
// benchmark.
//
// A coalescing connection takes what nats.go writes into a buffer of its
// own and returns at once. The first write starts a writer goroutine,
// which yields the processor once (runtime.Gosched) before it writes, so
// that the goroutines the same event made runnable (the rest of the batch)
// add their bytes first, and then writes the lot in one system call; it
// goes on while there is more and ends when the buffer is empty, so that
// an idle connection has no goroutine (nats.go drops some connections
// without closing them, to their finalizers). Bytes keep their order; the
// yield is the only delay (no timer).
//
// What nats.go believes written may still sit in the buffer, as it may sit
// in the kernel's socket buffer without coalescing; up to bufferMax bytes
// (and the write under way) more are at risk when the connection fails,
// and Close gives what is buffered closeTimeout to go out. The answers to
// a lost write are nats.go's and paystream's, unchanged: a JetStream
// publish that gets no PubAck times out and is published again, a lost ack
// is a redelivery, a lost pull request expires.

// coalesceBufferMax is how much a coalescing connection buffers before a
// write waits for its writer to take the buffer.
const coalesceBufferMax = 1 << 20

// coalesceCloseTimeout bounds how long Close waits for the buffered bytes
// (nats.go's last flush before it closes) to be written. nats.go may hold
// its connection's lock meanwhile (a close on a failed read does), so it
// is short.
const coalesceCloseTimeout = 2 * time.Second

// coalesceWrites is the nats.go option that makes the connection coalesce
// its writes. Connect applies it after every other option, so that it
// dials with their settings: the connect timeout (nats.Timeout, or a
// nats.Dialer's own; nats.go's dialer divides it among the addresses a
// host name resolves to, this one gives each address all of it), the rest
// of a nats.Dialer, MPTCP (nats.MultipathTCP), and nats.FlusherTimeout, which bounds each of the
// writer's writes as it bounds the flusher's. A dialer set by
// nats.SetCustomDialer is kept, and the connection does not coalesce.
func coalesceWrites() nats.Option {
	return func(o *nats.Options) error {
		if o.CustomDialer == nil {
			o.CustomDialer = newCoalescingDialer(*o)
		}
		return nil
	}
}

// coalescingDialer dials TCP as nats.go's dialer would with the same
// options and wraps each connection in a coalescingConn. It is nats.go's
// CustomDialer.
type coalescingDialer struct {
	dialer       net.Dialer
	writeTimeout time.Duration
	// dialed counts the connections made.
	dialed atomic.Int64
}

func newCoalescingDialer(o nats.Options) *coalescingDialer {
	d := &coalescingDialer{writeTimeout: o.FlusherTimeout}
	if o.Dialer != nil {
		// As nats.go does: a nats.Dialer brings its own timeout.
		d.dialer = *o.Dialer
	} else {
		d.dialer.Timeout = o.Timeout
	}
	if o.AllowMultipathTCP != nil {
		d.dialer.SetMultipathTCP(*o.AllowMultipathTCP)
	}
	if d.writeTimeout <= 0 {
		d.writeTimeout = nats.DefaultFlusherTimeout
	}
	return d
}

// Dial dials address and returns it coalescing.
func (d *coalescingDialer) Dial(network, address string) (net.Conn, error) {
	c, err := d.dialer.Dial(network, address)
	if err != nil {
		return nil, err
	}
	d.dialed.Add(1)
	return newCoalescingConn(c, coalesceBufferMax, d.writeTimeout, coalesceCloseTimeout), nil
}

// coalescingConn is a net.Conn whose Write buffers and whose writer
// goroutine writes what was buffered in as few system calls as it can.
// Reads and read deadlines go to the wrapped connection. Writes are bounded
// by writeTimeout, not by write deadlines, which it ignores: nats.go sets
// one around every Write, and Write no longer waits for the network.
type coalescingConn struct {
	net.Conn

	bufferMax    int
	writeTimeout time.Duration
	closeTimeout time.Duration

	mu    sync.Mutex
	taken *sync.Cond // signalled when the writer took the buffer, failed, or Close was called
	buf   []byte     // what Write took and the writer has not
	spare []byte     // the writer's last buffer, reused
	// writing is the writer's, closed when it ends; nil when none runs. It
	// stays set after a failed write (no writer starts again), so that
	// Close waits for the writer that failed to close the connection.
	writing chan struct{}
	failed  error // the write that failed; the connection is closed
	closed  bool  // Close was called: no more writes; the writer writes what is buffered

	closeOnce sync.Once
	closeErr  error
}

func newCoalescingConn(c net.Conn, bufferMax int, writeTimeout, closeTimeout time.Duration) *coalescingConn {
	cc := &coalescingConn{Conn: c, bufferMax: bufferMax, writeTimeout: writeTimeout, closeTimeout: closeTimeout}
	cc.taken = sync.NewCond(&cc.mu)
	return cc
}

// Write buffers p for the writer, starting it if none runs. It waits only
// while the buffer holds bufferMax bytes or more (a network slower than the
// publishers). After a failed write it fails with that write's error, and
// after Close with net.ErrClosed.
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.failed == nil && !c.closed && len(c.buf) > 0 && len(c.buf)+len(p) > c.bufferMax {
		c.taken.Wait()
	}
	switch {
	case c.failed != nil:
		err := c.failed
		c.mu.Unlock()
		return 0, err
	case c.closed:
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.buf = append(c.buf, p...)
	var done chan struct{}
	if c.writing == nil {
		done = make(chan struct{})
		c.writing = done
	}
	c.mu.Unlock()
	if done != nil {
		// The writer is the connection's while it runs: Close waits for it.
		go c.run(done)
	}
	return len(p), nil
}

// Read reads from the connection. Once a write failed (and closed the
// connection), a failed read reports that write's error, not the closing.
func (c *coalescingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.mu.Lock()
		if c.failed != nil {
			err = c.failed
		}
		c.mu.Unlock()
	}
	return n, err
}

// SetDeadline sets the read deadline only (nats.go bounds its connect
// handshake with it); the writer bounds writes.
func (c *coalescingConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// SetWriteDeadline is ignored: Write does not wait for the network, and
// the writer bounds each of its writes by writeTimeout.
func (c *coalescingConn) SetWriteDeadline(time.Time) error { return nil }

// Close gives what is buffered up to closeTimeout to be written (nats.go
// flushes before it closes), then closes the connection and waits for the
// writer. Writes after Close fail with net.ErrClosed.
func (c *coalescingConn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.taken.Broadcast()
		done := c.writing
		c.mu.Unlock()
		if done != nil {
			t := time.NewTimer(c.closeTimeout)
			select {
			case <-done:
			case <-t.C:
				// A write that does not finish: closing cuts it short.
			}
			t.Stop()
		}
		c.mu.Lock()
		failed := c.failed != nil // the writer closed the connection
		c.mu.Unlock()
		if !failed {
			c.closeErr = c.Conn.Close()
		}
		if done != nil {
			<-done
		}
	})
	return c.closeErr
}

// run is the writer: it yields once, so that the goroutines already
// runnable add their writes, then writes everything buffered in one call,
// and again while more came meanwhile. It ends when the buffer is empty,
// or after a failed write, which closes the connection so that nats.go's
// read loop sees the failure at once and reconnects.
func (c *coalescingConn) run(done chan struct{}) {
	defer close(done)
	for {
		runtime.Gosched()
		c.mu.Lock()
		b := c.buf
		if len(b) == 0 {
			c.writing = nil
			c.mu.Unlock()
			return
		}
		c.buf = c.spare[:0]
		c.taken.Broadcast()
		c.mu.Unlock()

		// After Close, Close's own timer bounds the write as well.
		err := c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		if err == nil {
			_, err = c.Conn.Write(b)
		}

		c.mu.Lock()
		if cap(b) <= c.bufferMax {
			c.spare = b[:0]
		} else {
			// A burst (nats.go's reconnect buffer, say): not kept.
			c.spare = nil
		}
		if err != nil {
			// writing stays set: no writer starts after a failure, and
			// Close waits for this one to close the connection and end.
			c.failed = err
			c.buf = nil
			c.taken.Broadcast()
		}
		c.mu.Unlock()
		if err != nil {
			_ = c.Conn.Close()
			return
		}
	}
}
