package natsconn

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/internal/testenv/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestConnectAuthenticates connects to servers that each require one way to
// authenticate, and checks that each refuses a client without it.
func TestConnectAuthenticates(t *testing.T) {
	t.Parallel()
	type setup struct {
		configure func(*server.Options)
		tls       bool // connect to the tls:// URL
		opts      Options
	}
	cases := map[string]func(t *testing.T) setup{
		"user and password": func(*testing.T) setup {
			return setup{
				configure: func(o *server.Options) { o.Username, o.Password = "paystream", "s3cret" },
				opts:      Options{User: "paystream", Password: "s3cret"},
			}
		},
		"token": func(*testing.T) setup {
			return setup{
				configure: func(o *server.Options) { o.Authorization = "t0ken" },
				opts:      Options{Token: "t0ken"},
			}
		},
		"credentials file": func(t *testing.T) setup {
			op := natstest.NewOperator(t)
			return setup{configure: op.Configure, opts: Options{CredsFile: op.CredsFile}}
		},
		"mutual TLS": func(t *testing.T) setup {
			f := natstest.NewTLSFiles(t)
			return setup{
				configure: f.RequireMutualTLS(t),
				tls:       true,
				opts:      Options{TLSCA: f.CA, TLSCert: f.ClientCert, TLSKey: f.ClientKey},
			}
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := mk(t)
			srv := natstest.New(t, natstest.Options{Configure: s.configure})
			url := srv.URL()
			if s.tls {
				url = srv.TLSURL()
			}
			_, err := Connect(Options{URLs: []string{url}, TLSCA: s.opts.TLSCA}, nats.Timeout(5*time.Second))
			require.Error(t, err, "the server lets a client in without the credentials")

			// With and without write coalescing, whose dialer replaces
			// nats.go's: TLS runs over the coalescing connection.
			for _, coalesce := range []bool{false, true} {
				o := s.opts
				o.URLs, o.Name, o.CoalesceWrites = []string{url}, "natsconn-test", coalesce
				nc, err := Connect(o)
				require.NoError(t, err, "coalescing writes: %t", coalesce)
				require.NoError(t, nc.Flush())
				require.True(t, nc.IsConnected())
				if s.tls {
					_, err := nc.TLSConnectionState()
					require.NoError(t, err, "the connection is TLS")
				}
				nc.Close()
			}
		})
	}
}

func TestConnectLogsAndReportsTheClose(t *testing.T) {
	t.Parallel()
	for _, coalesce := range []bool{false, true} {
		t.Run(fmt.Sprintf("coalescing writes %t", coalesce), func(t *testing.T) {
			t.Parallel()
			testConnectLogsAndReportsTheClose(t, coalesce)
		})
	}
}

func testConnectLogsAndReportsTheClose(t *testing.T, coalesce bool) {
	srv := natstest.New(t)
	var logs syncBuffer
	closed := make(chan struct{})
	nc, err := Connect(Options{
		URLs:           []string{srv.URL()},
		Logger:         zerolog.New(&logs),
		ClosedFunc:     func() { close(closed) },
		CoalesceWrites: coalesce,
	}, nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond))
	require.NoError(t, err)

	srv.Restart()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "nats reconnected") },
		20*time.Second, 10*time.Millisecond, "a reconnect after a server restart is logged")
	nc.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("ClosedFunc was not called")
	}
	out := logs.String()
	require.Contains(t, out, `"component":"nats"`)
	require.Contains(t, out, "nats disconnected; reconnecting")
	require.Contains(t, out, "nats connection closed")
}

func TestConnectErrorsHoldNoSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"no URL", Options{}, "connect to NATS: no server URL"},
		{"unparseable URL", Options{URLs: []string{"nats://a:1", "nats://u:s3cret@h:1 x%zz"}},
			"connect to NATS: URL 2 of 2 cannot be parsed as a URL"},
		{"certificate without key", Options{URLs: []string{"nats://a:1"}, TLSCert: "c.pem"},
			"connect to NATS: a TLS client certificate needs its key, and a key its certificate"},
		{"connection refused", Options{URLs: []string{"nats://alice:s3cret@127.0.0.1:1", "nats://t0k3n@127.0.0.1:2"}},
			"connect to NATS at nats://alice:xxxxx@127.0.0.1:1,nats://xxxxx@127.0.0.1:2: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nc, err := Connect(tt.o)
			require.Nil(t, nc)
			require.ErrorContains(t, err, tt.want)
			require.NotContains(t, err.Error(), "s3cret")
			require.NotContains(t, err.Error(), "t0k3n")
		})
	}
}

func TestRedactURLs(t *testing.T) {
	t.Parallel()
	require.Equal(t, "nats://a:1,nats://u:xxxxx@b:2,nats://xxxxx@c:3,(unparseable URL)",
		redactURLs([]string{"nats://a:1", "nats://u:p@b:2", "nats://tok@c:3", "nats://u:p@b:2 x%zz"}))
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Clone(s.b.String())
}
