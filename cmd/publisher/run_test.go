package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/defaults"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/publish"
)

func TestMain(m *testing.M) {
	// The outbox tests need Postgres; the cluster starts on first use only.
	pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true})
}

type testBundle struct {
	url    string
	js     jetstream.JetStream
	stream jetstream.Stream
}

// setup starts a JetStream server with a stream named name capturing
// <prefix>.requests.>, as the worker provisions it.
func setup(t *testing.T, name, prefix string) *testBundle {
	t.Helper()
	return setupAt(t, natstest.New(t).URL(), name, prefix)
}

// setupAt is setup on the server at url, which a client reaches with opts.
func setupAt(t *testing.T, url, name, prefix string, opts ...nats.Option) *testBundle {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	b := &testBundle{url: url, js: js}
	if name == "" {
		return b
	}
	ccfg := defaults.Consumer()
	ccfg.Stream, ccfg.SubjectPrefix = name, prefix
	b.stream, err = js.CreateStream(testContext(t), ccfg.StreamConfigs()[0])
	require.NoError(t, err)
	return b
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (b *testBundle) msgs(t *testing.T) uint64 {
	t.Helper()
	info, err := b.stream.Info(testContext(t))
	require.NoError(t, err)
	return info.State.Msgs
}

// env returns a getenv over m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of run.
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
	return s.b.String()
}

type runResult struct {
	err    error
	stdout string
	stderr string
}

func runCmd(ctx context.Context, args []string, getenv map[string]string, stdin string) runResult {
	var stdout, stderr syncBuffer
	err := run(ctx, args, env(getenv), strings.NewReader(stdin), &stdout, &stderr)
	return runResult{err: err, stdout: stdout.String(), stderr: stderr.String()}
}

func decodeSummary(t *testing.T, out string) summary {
	t.Helper()
	var s summary
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&s), "stdout: %s", out)
	require.False(t, dec.More(), "one JSON object only: %s", out)
	return s
}

func TestRunGenerated(t *testing.T) {
	t.Parallel()
	b := setup(t, "PAYMENTS", "payments")

	const n, seed = 500, 7
	args := []string{"--nats-url", b.url, "--count", "500", "--duplicates", "0.1", "--invalid", "0.05",
		"--seed", "7", "--merchants", "4", "--summary-json"}
	res := runCmd(testContext(t), args, nil, "")
	require.NoError(t, res.err, "stderr: %s", res.stderr)

	// What the generator says the load is.
	var want summary
	opts := publish.GenOptions{Merchants: 4, Duplicates: 0.1, Invalid: 0.05}
	for i := range n {
		it := publish.Generate(seed, i, opts)
		switch it.Kind {
		case publish.KindValid:
			want.Valid++
			if it.Declined() {
				want.ExpectedDeclines++
			}
		case publish.KindDuplicate:
			want.DuplicatesSent++
		case publish.KindInvalid:
			want.InvalidSent++
		}
	}
	require.InDelta(t, 50, want.DuplicatesSent, 25)
	require.InDelta(t, 25, want.InvalidSent, 20)

	got := decodeSummary(t, res.stdout)
	require.Equal(t, int64(n), got.Published, "duplicates carry new msg ids: the server stores all")
	require.Zero(t, got.DuplicatesRejectedByServer)
	require.Zero(t, got.Failed)
	require.Equal(t, want.Valid, got.Valid)
	require.Equal(t, want.DuplicatesSent, got.DuplicatesSent)
	require.Equal(t, want.InvalidSent, got.InvalidSent)
	require.Equal(t, want.ExpectedDeclines, got.ExpectedDeclines)
	require.Equal(t, int64(n), got.Sent)
	require.NotNil(t, got.Seed)
	require.Equal(t, int64(seed), *got.Seed)
	require.False(t, got.Interrupted)
	require.Positive(t, got.Elapsed)
	require.Positive(t, got.Rate)
	require.Equal(t, uint64(n), b.msgs(t))

	// The messages are the generator's, on the merchants' subjects.
	ctx := testContext(t)
	for _, seq := range []uint64{1, 250, 500} {
		m, err := b.stream.GetMsg(ctx, seq)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(m.Subject, "payments.requests.m00"), m.Subject)
		require.Equal(t, "application/json", m.Header.Get("Content-Type"))
		require.NotEmpty(t, m.Header.Get(jetstream.MsgIDHeader))
	}

	t.Run("the same seed again: all rejected as duplicates by the server", func(t *testing.T) {
		res := runCmd(testContext(t), args, nil, "")
		require.NoError(t, res.err, "stderr: %s", res.stderr)
		got := decodeSummary(t, res.stdout)
		require.Zero(t, got.Published)
		require.Equal(t, int64(n), got.DuplicatesRejectedByServer)
		require.Zero(t, got.Failed)
		require.Equal(t, uint64(n), b.msgs(t))
	})
}

func TestRunEnvironment(t *testing.T) {
	t.Parallel()
	b := setup(t, "ACME_PAY", "acme.pay")

	res := runCmd(testContext(t), []string{"--count", "20", "--quiet"}, map[string]string{
		"PAYSTREAM_NATS_URL":       b.url,
		"PAYSTREAM_SUBJECT_PREFIX": "acme.pay",
		"PAYSTREAM_STREAM":         "ACME_PAY",
	}, "")
	require.NoError(t, res.err, "stderr: %s", res.stderr)
	require.Empty(t, res.stderr, "--quiet")
	require.Contains(t, res.stdout, "published:                      20\n")
	require.Contains(t, res.stdout, "failed:                         0\n")
	require.Regexp(t, `; seed -?\d+\n`, res.stdout, "a chosen seed is printed")
	require.Equal(t, uint64(20), b.msgs(t))
	m, err := b.stream.GetMsg(testContext(t), 1)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(m.Subject, "acme.pay.requests.m0"), m.Subject)

	t.Run("flags win over the environment", func(t *testing.T) {
		res := runCmd(testContext(t), []string{"--count", "1", "--nats-url", b.url, "--stream", "ACME_PAY", "--subject-prefix", "acme.pay"},
			map[string]string{"PAYSTREAM_NATS_URL": "nats://127.0.0.1:1", "PAYSTREAM_STREAM": "NOPE"}, "")
		require.NoError(t, res.err, "stderr: %s", res.stderr)
	})
}

func TestRunMissingStream(t *testing.T) {
	t.Parallel()
	b := setup(t, "", "")
	res := runCmd(testContext(t), []string{"--nats-url", b.url, "--count", "5"}, nil, "")
	require.EqualError(t, res.err, `stream "PAYMENTS" not found: start a worker with provisioning on, or create it`)
	require.Empty(t, res.stdout)
}

func TestRunFrom(t *testing.T) {
	t.Parallel()
	b := setup(t, "PAYMENTS", "payments")

	lines := []string{
		`{"payment_id":"p1","merchant_id":"m001","amount_minor":1000,"currency":"USD","payment_method":"pm_card_visa"}`,
		`{"payment_id":"p2","merchant_id":"m002","amount_minor":513,"currency":"JPY","payment_method":"pm_card_visa"}`,
		``,
		`{"payment_id":"p3","merchant_id":"m001","amount_minor":1000,"currency":"XXX","payment_method":"pm_card_visa"}`,
		`{"payment_id":"p4","merchant_id":"m001","amount_minor":10.5,`,
		`{"payment_id":"p5","amount_minor":1000,"currency":"USD","payment_method":"pm_card_visa"}`,
		`{"payment_id":"p6","merchant_id":"m.1","amount_minor":1000,"currency":"USD","payment_method":"pm_card_visa"}`,
		`["not", "an", "object"]`,
		`{"payment_id":"p1","merchant_id":"m001","amount_minor":1000,"currency":"USD","payment_method":"pm_card_visa"}`,
		`  {"payment_id":7,"merchant_id":"m003","amount_minor":1000,"currency":"USD","payment_method":"pm_card_visa"}  `,
	}
	file := filepath.Join(t.TempDir(), "requests.jsonl")
	require.NoError(t, os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o600))

	check := func(t *testing.T, res runResult) {
		t.Helper()
		// Four bad lines: failed, so the run fails.
		require.EqualError(t, res.err, "4 of 9 messages failed")
		got := decodeSummary(t, res.stdout)
		require.Equal(t, int64(4), got.Failed)
		require.Equal(t, int64(5), got.Sent, "p1, p2, p3, p1 again, p7")
		require.Equal(t, int64(5), got.Published+got.DuplicatesRejectedByServer)
		require.Equal(t, int64(3), got.Valid, "p1 twice, p2")
		require.Equal(t, int64(1), got.ExpectedDeclines, "513 JPY ends in 13")
		require.Equal(t, int64(2), got.InvalidSent, "XXX currency, payment_id not a string")
		require.Zero(t, got.DuplicatesSent)
		require.Nil(t, got.Seed)

		for _, want := range []string{
			"line 5: not JSON",
			"line 6: no merchant_id",
			"line 7: merchant_id cannot be a subject token",
			"line 8: not a JSON object",
		} {
			require.Contains(t, res.stderr, want)
		}
		require.NotContains(t, res.stderr, "line 3:", "blank lines are skipped")
	}

	res := runCmd(testContext(t), []string{"--nats-url", b.url, "--from", file, "--summary-json"}, nil, "")
	check(t, res)
	got := decodeSummary(t, res.stdout)
	require.Equal(t, int64(4), got.Published)
	require.Equal(t, int64(1), got.DuplicatesRejectedByServer)
	require.Equal(t, uint64(4), b.msgs(t))

	// Publishes run concurrently: find messages by subject, not sequence.
	ctx := testContext(t)
	m, err := b.stream.GetLastMsgForSubject(ctx, "payments.requests.m002")
	require.NoError(t, err)
	require.Equal(t, "p2", m.Header.Get(jetstream.MsgIDHeader))
	require.Equal(t, lines[1], string(m.Data), "published as it is")
	m, err = b.stream.GetLastMsgForSubject(ctx, "payments.requests.m003")
	require.NoError(t, err)
	require.Empty(t, m.Header.Get(jetstream.MsgIDHeader), "a payment_id that is not a string gives no msg id")
	require.Equal(t, strings.TrimSpace(lines[9]), string(m.Data))

	t.Run("from standard input", func(t *testing.T) {
		// Everything but p7 (no msg id) is now a server duplicate.
		res := runCmd(testContext(t), []string{"--nats-url", b.url, "--from", "-", "--summary-json"}, nil, strings.Join(lines, "\n")+"\n")
		check(t, res)
		got := decodeSummary(t, res.stdout)
		require.Equal(t, int64(1), got.Published)
		require.Equal(t, int64(4), got.DuplicatesRejectedByServer)
		require.Equal(t, uint64(5), b.msgs(t))
	})

	t.Run("missing file", func(t *testing.T) {
		res := runCmd(testContext(t), []string{"--nats-url", b.url, "--from", filepath.Join(t.TempDir(), "nope")}, nil, "")
		require.ErrorIs(t, res.err, os.ErrNotExist)
	})
}

func TestRunInterrupt(t *testing.T) {
	t.Parallel()
	b := setup(t, "PAYMENTS", "payments")

	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	var res runResult
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		// Slow enough that the run cannot end before the cancel below.
		res = runCmd(ctx, []string{"--nats-url", b.url, "--count", "100000", "--rate", "200", "--summary-json", "--seed", "1"}, nil, "")
	}()
	require.Eventually(t, func() bool { return b.msgs(t) >= 10 }, 20*time.Second, 10*time.Millisecond)
	cancel()
	<-finished

	require.ErrorIs(t, res.err, context.Canceled)
	require.ErrorContains(t, res.err, "interrupted after")
	got := decodeSummary(t, res.stdout)
	require.True(t, got.Interrupted)
	require.Less(t, got.Sent, int64(100000))
	require.Equal(t, got.Sent, got.Published+got.DuplicatesRejectedByServer+got.Failed, "every message sent is accounted for")
	require.Equal(t, uint64(got.Published), b.msgs(t))
}

func TestRunUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"every problem at once", []string{"--count", "-1", "--duplicates", "2", "--merchants", "0", "--rate", "-3", "--max-pending", "-1"},
			nil, []string{"--count -1", "--duplicates or --invalid", "--merchants 0", "--rate -3", "max pending"}},
		{"fractions over one together", []string{"--duplicates", "0.6", "--invalid", "0.6"}, nil, []string{"must not exceed 1"}},
		{"from with generator flags", []string{"--from", "x", "--count", "3", "--seed", "1"}, nil, []string{"--from cannot be combined with --count, --seed"}},
		{"unknown flag", []string{"--nope"}, nil, []string{"flag provided but not defined"}},
		{"stray argument", []string{"extra"}, nil, []string{"unexpected arguments"}},
		{"bad prefix from the environment", nil, map[string]string{"PAYSTREAM_SUBJECT_PREFIX": "a.>"}, []string{"wildcards"}},
		{"token and user", nil, map[string]string{"PAYSTREAM_NATS_TOKEN": "t", "PAYSTREAM_NATS_USER": "u"}, []string{"--nats-token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := runCmd(t.Context(), tt.args, tt.env, "")
			require.ErrorIs(t, res.err, errUsage)
			for _, w := range tt.want {
				require.ErrorContains(t, res.err, w)
			}
			require.Empty(t, res.stdout)
		})
	}

	t.Run("help", func(t *testing.T) {
		t.Parallel()
		res := runCmd(t.Context(), []string{"-h"}, nil, "")
		require.True(t, errors.Is(res.err, flag.ErrHelp))
		require.Contains(t, res.stderr, "-summary-json")
	})

	t.Run("connection refused, credentials not shown", func(t *testing.T) {
		t.Parallel()
		res := runCmd(t.Context(), []string{"--nats-url", "nats://alice:s3cret@127.0.0.1:1", "--count", "1"}, nil, "")
		require.ErrorContains(t, res.err, "connect to NATS at nats://alice:xxxxx@127.0.0.1:1")
		require.NotContains(t, res.err.Error(), "s3cret")
	})
}

// TestRunAuthenticatesToNATS publishes to servers that require mutual TLS
// or a user and password, given the settings the worker reads for them.
func TestRunAuthenticatesToNATS(t *testing.T) {
	t.Parallel()
	type setup struct {
		configure  func(*server.Options)
		tls        bool // connect to the tls:// URL
		env        map[string]string
		clientOpts []nats.Option
		// refused is an environment that the server must refuse, which
		// shows that it does require the method.
		refused map[string]string
	}
	cases := map[string]func(t *testing.T) setup{
		"mutual TLS": func(t *testing.T) setup {
			f := natstest.NewTLSFiles(t)
			return setup{
				configure: f.RequireMutualTLS(t),
				tls:       true,
				env: map[string]string{
					"PAYSTREAM_NATS_TLS_CA":   f.CA,
					"PAYSTREAM_NATS_TLS_CERT": f.ClientCert,
					"PAYSTREAM_NATS_TLS_KEY":  f.ClientKey,
				},
				clientOpts: []nats.Option{nats.RootCAs(f.CA), nats.ClientCert(f.ClientCert, f.ClientKey)},
				refused:    map[string]string{"PAYSTREAM_NATS_TLS_CA": f.CA}, // no client certificate
			}
		},
		"user and password": func(*testing.T) setup {
			return setup{
				configure:  func(o *server.Options) { o.Username, o.Password = "paystream", "s3cret" },
				env:        map[string]string{"PAYSTREAM_NATS_USER": "paystream", "PAYSTREAM_NATS_PASSWORD": "s3cret"},
				clientOpts: []nats.Option{nats.UserInfo("paystream", "s3cret")},
				refused:    map[string]string{"PAYSTREAM_NATS_USER": "paystream", "PAYSTREAM_NATS_PASSWORD": "wrong"},
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
			b := setupAt(t, url, "PAYMENTS", "payments", s.clientOpts...)

			refused := map[string]string{"PAYSTREAM_NATS_URL": url}
			maps.Copy(refused, s.refused)
			res := runCmd(testContext(t), []string{"--count", "1"}, refused, "")
			require.ErrorContains(t, res.err, "connect to NATS at "+url)
			require.NotContains(t, res.err.Error(), "wrong", "no password in the error")

			env := map[string]string{"PAYSTREAM_NATS_URL": url}
			maps.Copy(env, s.env)
			res = runCmd(testContext(t), []string{"--count", "20", "--quiet", "--summary-json"}, env, "")
			require.NoError(t, res.err, "stderr: %s", res.stderr)
			require.Equal(t, int64(20), decodeSummary(t, res.stdout).Published)
			require.Equal(t, uint64(20), b.msgs(t))
		})
	}
}

func TestProgressLines(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	c := &counters{}
	p := newProgress(&out, progressLines, 10, time.Millisecond, c)
	for range 3 {
		c.published.Add(1)
		p.add()
	}
	c.failed.Add(1)
	p.add()
	p.printf("line %d: oops", 4)
	require.Eventually(t, func() bool {
		return strings.Contains(out.String(), "progress: 4/10 done (published 3, rejected as duplicate 0, failed 1)")
	}, 10*time.Second, time.Millisecond)
	p.stop(true)
	p.stop(true) // idempotent
	require.Contains(t, out.String(), "line 4: oops\n")
	// stop prints a last line and ends the goroutine (goleak checks).
	require.True(t, strings.HasSuffix(out.String(), "msg/s\n"), out.String())
}

func TestProgressBar(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	c := &counters{}
	p := newProgress(&out, progressBar, 5, time.Hour, c)
	for range 5 {
		p.add()
	}
	p.printf("error: boom")
	p.stop(true)
	s := out.String()
	require.Contains(t, s, "error: boom\n")
	require.Contains(t, s, "publishing")
	require.Contains(t, s, "5/5")
	require.False(t, isTerminal(&out))
}
