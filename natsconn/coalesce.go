package natsconn

import (
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Write coalescing (Options.CoalesceWrites).
//
// nats.go buffers what a connection sends and has one flusher goroutine
// write it out: every publish, ack or pull request wakes the flusher, and
// the Go scheduler runs a goroutine it has just woken next. In a worker
// where hundreds of handlers finish a batch at once, each handler's publish
// (or ack) therefore reached the socket in a write of its own: 0.55 write
// system calls per payment in the benchmark, each waking nats-server's
// read loop, where the floor, which publishes a batch from one goroutine,
// needs 0.05. Nagle's algorithm (TCP_NODELAY off) is no remedy: it still
// makes every write a system call, and holding back small writes until
// the last one is acknowledged cost 16 % of the throughput in the
// benchmark.
//
// A coalescing connection takes what nats.go writes into a buffer of its
// own and returns at once; its writer goroutine, woken by the first write,
// yields the processor once (runtime.Gosched) before it writes, so that the
// goroutines the same event made runnable (the rest of the batch) add
// their bytes first, and then writes the lot in one system call. Bytes
// keep their order; the yield is the only delay (no timer).
//
// What nats.go believes written may still sit in the buffer, as it may sit
// in the kernel's socket buffer without coalescing: when the connection
// fails, both are lost alike, and nats.go's answers to that are unchanged
// (a publish that gets no PubAck times out and is retried, a lost ack is a
// redelivery, a lost pull request expires).

// coalesceBufferMax is how much a coalescing connection buffers before a
// write waits for its writer to drain the buffer.
const coalesceBufferMax = 1 << 20

// coalesceWriteTimeout bounds each write of the writer, as nats.go's
// flusher timeout bounds its writes (nats.DefaultFlusherTimeout): a write
// that does not finish in time fails the connection.
const coalesceWriteTimeout = nats.DefaultFlusherTimeout

// coalesceCloseTimeout bounds how long Close waits for the buffered bytes
// (nats.go's last flush before it closes) to be written.
const coalesceCloseTimeout = 2 * time.Second

// coalescingDialer dials TCP as nats.go's default dialer does and wraps
// each connection in a coalescingConn. It is nats.go's CustomDialer.
type coalescingDialer struct {
	dialer net.Dialer
}

func newCoalescingDialer() *coalescingDialer {
	// nats.go's default dialer: the connect timeout, no other setting.
	return &coalescingDialer{dialer: net.Dialer{Timeout: nats.GetDefaultOptions().Timeout}}
}

// Dial dials address and returns it coalescing.
func (d *coalescingDialer) Dial(network, address string) (net.Conn, error) {
	c, err := d.dialer.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return newCoalescingConn(c, coalesceBufferMax, coalesceWriteTimeout, coalesceCloseTimeout), nil
}

// coalescingConn is a net.Conn whose Write buffers and whose writer
// goroutine writes what was buffered in as few system calls as it can.
// Reads and read deadlines go to the wrapped connection. Writes are bounded
// by the writer's own timeout, not by write deadlines, which it ignores:
// nats.go sets one around every Write, and Write no longer blocks on the
// network.
type coalescingConn struct {
	net.Conn

	bufferMax    int
	writeTimeout time.Duration
	closeTimeout time.Duration

	mu        sync.Mutex
	drained   *sync.Cond // signalled when the writer took the buffer, or failed
	buf       []byte     // what Write took and the writer has not
	spare     []byte     // the writer's last buffer, reused
	err       error      // the first write error, or net.ErrClosed after Close
	closing   bool       // Close was called: write what is buffered, then stop
	wake      chan struct{}
	exited    chan struct{}
	closeOnce sync.Once
	closeErr  error
}

func newCoalescingConn(c net.Conn, bufferMax int, writeTimeout, closeTimeout time.Duration) *coalescingConn {
	cc := &coalescingConn{
		Conn:         c,
		bufferMax:    bufferMax,
		writeTimeout: writeTimeout,
		closeTimeout: closeTimeout,
		wake:         make(chan struct{}, 1),
		exited:       make(chan struct{}),
	}
	cc.drained = sync.NewCond(&cc.mu)
	// The writer is the connection's: Close stops it and waits for it.
	go cc.run()
	return cc
}

// Write buffers p for the writer. It waits only while the buffer holds
// bufferMax bytes or more (a network slower than the publishers); it fails
// once a write of the writer failed, or after Close.
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && len(c.buf) > 0 && len(c.buf)+len(p) > c.bufferMax {
		c.drained.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.buf = append(c.buf, p...)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // the writer is already due to run
	}
	return len(p), nil
}

// SetDeadline sets the read deadline only (nats.go bounds its connect
// handshake with it); the writer bounds writes.
func (c *coalescingConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// SetWriteDeadline is ignored: Write does not wait for the network, and
// the writer bounds each of its writes by writeTimeout.
func (c *coalescingConn) SetWriteDeadline(time.Time) error { return nil }

// Close writes what is buffered (for up to closeTimeout: nats.go flushes
// before it closes), closes the connection and waits for the writer.
// Writes after Close fail with net.ErrClosed.
func (c *coalescingConn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		if c.err == nil {
			c.err = net.ErrClosed
		}
		c.drained.Broadcast()
		c.mu.Unlock()
		select {
		case c.wake <- struct{}{}:
		default:
		}
		t := time.NewTimer(c.closeTimeout)
		select {
		case <-c.exited:
		case <-t.C:
			// A write that does not finish: closing cuts it short.
		}
		t.Stop()
		c.closeErr = c.Conn.Close()
		<-c.exited
	})
	return c.closeErr
}

// run is the writer: each time it is woken it yields once, so that the
// goroutines already runnable add their writes, then writes everything
// buffered in one call. It returns after Close (once the buffer is
// written) or after a failed write, which closes the connection so that
// nats.go's read loop sees the failure at once and reconnects.
func (c *coalescingConn) run() {
	defer close(c.exited)
	for range c.wake {
		runtime.Gosched()
		c.mu.Lock()
		b, closing := c.buf, c.closing
		c.buf = c.spare[:0]
		c.drained.Broadcast()
		c.mu.Unlock()
		var err error
		if len(b) > 0 {
			timeout := c.writeTimeout
			if closing {
				timeout = c.closeTimeout
			}
			if err = c.Conn.SetWriteDeadline(time.Now().Add(timeout)); err == nil {
				_, err = c.Conn.Write(b)
			}
		}
		c.mu.Lock()
		c.spare = b[:0]
		if err != nil && c.err == nil {
			c.err = err
		}
		c.drained.Broadcast()
		c.mu.Unlock()
		if err != nil {
			_ = c.Conn.Close()
			return
		}
		if closing {
			return
		}
	}
}
