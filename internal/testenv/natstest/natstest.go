// Package natstest runs real NATS JetStream servers in-process for tests: one
// per test, on a random loopback port, with its store in a temporary directory,
// and helpers to stop and restart it on the same port and store for fault
// tests.
package natstest

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options tunes the embedded server. The zero value is a plain JetStream server.
type Options struct {
	// Configure, when set, may change the server options before each start
	// (authorization, TLS, limits). Host, Port and StoreDir are set already.
	Configure func(*server.Options)
}

// Server is one embedded JetStream server owned by a test. Its methods are
// safe for concurrent use. It is shut down by t.Cleanup.
type Server struct {
	t        testing.TB
	opts     Options
	storeDir string

	mu   sync.Mutex
	port int
	srv  *server.Server
}

// New starts a JetStream server for t and shuts it down when t ends.
func New(t testing.TB, opts ...Options) *Server {
	t.Helper()
	s := &Server{t: t, storeDir: t.TempDir(), port: -1}
	if len(opts) > 0 {
		s.opts = opts[0]
	}
	s.mu.Lock()
	err := s.startLocked()
	s.mu.Unlock()
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func (s *Server) startLocked() error {
	o := &server.Options{
		Host:      "127.0.0.1",
		Port:      s.port,
		JetStream: true,
		StoreDir:  s.storeDir,
		NoLog:     true,
		NoSigs:    true,
		// Tests are short; a large max payload is not needed, but keep the
		// server default (1 MiB) so oversize bodies reach the worker.
	}
	if s.opts.Configure != nil {
		s.opts.Configure(o)
	}
	srv, err := server.NewServer(o)
	if err != nil {
		return fmt.Errorf("new server: %w", err)
	}
	srv.Start() // returns once the listeners run; Shutdown stops them
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("server on port %d not ready after 10s", s.port)
	}
	s.srv = srv
	if s.port <= 0 {
		s.port = srv.Addr().(*net.TCPAddr).Port
	}
	return nil
}

// URL returns the client URL, stable across restarts.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("nats://127.0.0.1:%d", s.port)
}

// Server returns the running nats-server, or nil while stopped.
func (s *Server) Server() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// Shutdown stops the server and waits for it; a stopped server stays stopped.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Start starts a stopped server again on the same port and store directory.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return
	}
	// The port was just released; retry briefly in case it lingers.
	var err error
	for i := 0; i < 50; i++ {
		if err = s.startLocked(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) //nolint:forbidigo // waiting for the OS to free the port
	}
	s.t.Errorf("natstest: restart: %v", err)
}

// Restart shuts the server down and starts it again on the same port and
// store, as a fault test needs.
func (s *Server) Restart() {
	s.t.Helper()
	s.Shutdown()
	s.Start()
}
