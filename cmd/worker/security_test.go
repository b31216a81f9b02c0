package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
)

// runningWorker is the whole worker program run in-process by a test.
type runningWorker struct {
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

// startRun runs the worker with env until stop or the end of the test.
func startRun(t *testing.T, env map[string]string) *runningWorker {
	t.Helper()
	w := &runningWorker{done: make(chan error, 1), logs: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() { w.done <- run(ctx, nil, envFrom(env), w.logs, w.logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			t.Errorf("worker did not stop")
		}
	})
	return w
}

// stop cancels the worker's context and requires run to return nil.
func (w *runningWorker) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	select {
	case err := <-w.done:
		require.NoError(t, err)
		w.done <- nil // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not stop within 20s")
	}
}

// baseEnv is the worker environment of these tests, without NATS settings.
// (An empty PAYSTREAM_HTTP_ADDR counts as unset, so give a free port.)
func baseEnv(t *testing.T, dbURL string) map[string]string {
	return map[string]string{
		"PAYSTREAM_DATABASE_URL":     dbURL,
		"PAYSTREAM_GATEWAY_URL":      "fake",
		"PAYSTREAM_HTTP_ADDR":        freeAddr(t),
		"PAYSTREAM_CONCURRENCY":      "8",
		"PAYSTREAM_SHUTDOWN_TIMEOUT": "5s",
		"PAYSTREAM_LOG_LEVEL":        "debug",
		"PAYSTREAM_WORKER_ID":        "security-test",
	}
}

// clientJS connects a test client with opts and waits until the worker has
// provisioned the requests stream.
func clientJS(t *testing.T, natsURL string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(natsURL, opts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := js.Stream(context.Background(), "PAYMENTS")
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "worker provisions the streams")
	return js
}

func publishJSON(t *testing.T, js jetstream.JetStream, subject string, v any) {
	t.Helper()
	body, err := json.Marshal(v)
	require.NoError(t, err)
	_, err = js.Publish(context.Background(), subject, body)
	require.NoError(t, err)
}

// waitFinal waits until the payment has a row in a final status.
func waitFinal(t *testing.T, pool *pgxpool.Pool, paymentID string) payment.Status {
	t.Helper()
	var status string
	require.Eventually(t, func() bool {
		err := pool.QueryRow(context.Background(),
			`SELECT status FROM payments WHERE payment_id = $1`, paymentID).Scan(&status)
		return err == nil && status != string(payment.StatusProcessing)
	}, 20*time.Second, 20*time.Millisecond, "final row for %s", paymentID)
	return payment.Status(status)
}

func newPool(t *testing.T, dbURL string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func randomString(t *testing.T, prefix string) string {
	t.Helper()
	var b [8]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return prefix + hex.EncodeToString(b[:])
}

// TestWorkerAuthenticatesToNATS runs the worker against servers that
// require each authentication method it supports, and pays one payment
// through each.
func TestWorkerAuthenticatesToNATS(t *testing.T) {
	t.Parallel()
	type setup struct {
		configure  func(*server.Options)
		tls        bool // client URL is tls://
		env        map[string]string
		clientOpts []nats.Option
		// refused, when set, is a connection the server must refuse,
		// which shows that the server does require the method.
		refused []nats.Option
	}
	cases := map[string]func(t *testing.T) setup{
		"user and password": func(t *testing.T) setup {
			pw := randomString(t, "pw-")
			return setup{
				configure:  func(o *server.Options) { o.Username, o.Password = "paystream", pw },
				env:        map[string]string{"PAYSTREAM_NATS_USER": "paystream", "PAYSTREAM_NATS_PASSWORD": pw},
				clientOpts: []nats.Option{nats.UserInfo("paystream", pw)},
				refused:    []nats.Option{nats.UserInfo("paystream", pw+"x")},
			}
		},
		"token": func(t *testing.T) setup {
			tok := randomString(t, "tok-")
			return setup{
				configure:  func(o *server.Options) { o.Authorization = tok },
				env:        map[string]string{"PAYSTREAM_NATS_TOKEN": tok},
				clientOpts: []nats.Option{nats.Token(tok)},
				refused:    []nats.Option{nats.Token(tok + "x")},
			}
		},
		"credentials file (operator mode)": func(t *testing.T) setup {
			op := natstest.NewOperator(t)
			other := natstest.NewOperator(t) // a user of an account the server does not trust
			return setup{
				configure:  op.Configure,
				env:        map[string]string{"PAYSTREAM_NATS_CREDS": op.CredsFile},
				clientOpts: []nats.Option{nats.UserCredentials(op.CredsFile)},
				refused:    []nats.Option{nats.UserCredentials(other.CredsFile)},
			}
		},
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
				refused:    []nats.Option{nats.RootCAs(f.CA)}, // no client certificate
			}
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := mk(t)
			ns := natstest.New(t, natstest.Options{Configure: s.configure})
			natsURL := ns.URL()
			if s.tls {
				natsURL = ns.TLSURL()
			}
			if s.refused != nil {
				nc, err := nats.Connect(natsURL, append(s.refused, nats.Timeout(5*time.Second))...)
				if err == nil {
					nc.Close()
				}
				require.Error(t, err, "the server lets a client in without the right credentials")
			}

			dbURL := pgtest.NewDatabase(t)
			env := baseEnv(t, dbURL)
			env["PAYSTREAM_NATS_URL"] = natsURL
			for k, v := range s.env {
				env[k] = v
			}
			w := startRun(t, env)
			js := clientJS(t, natsURL, s.clientOpts...)
			publishJSON(t, js, "payments.requests.m1", payment.Request{PaymentID: "p1", MerchantID: "m1",
				AmountMinor: 1250, Currency: "EUR", PaymentMethod: "pm_card_visa"})
			require.Equal(t, payment.StatusSucceeded, waitFinal(t, newPool(t, dbURL), "p1"))
			w.stop(t)
			require.Contains(t, w.logs.String(), "worker stopped")
		})
	}
}

// TestWrongNATSPasswordFailsWithoutLeakingIt checks that a worker with a
// wrong password never gets to work, and that neither its error nor its
// logs quote the password.
func TestWrongNATSPasswordFailsWithoutLeakingIt(t *testing.T) {
	t.Parallel()
	right := randomString(t, "right-")
	wrong := randomString(t, "wrong-")
	ns := natstest.New(t, natstest.Options{Configure: func(o *server.Options) { o.Username, o.Password = "paystream", right }})
	env := baseEnv(t, pgtest.NewDatabase(t))
	env["PAYSTREAM_NATS_URL"] = ns.URL()
	env["PAYSTREAM_NATS_USER"] = "paystream"
	env["PAYSTREAM_NATS_PASSWORD"] = wrong

	// The worker keeps retrying NATS (it may start before the server); it
	// never provisions, and stops with an error when told to.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var logs syncBuffer
	err := run(ctx, nil, envFrom(env), &logs, &logs)
	require.Error(t, err, "the worker ran with a wrong NATS password")
	require.Contains(t, err.Error(), "nats", "the error points at NATS")
	require.NotContains(t, err.Error(), wrong)
	require.NotContains(t, err.Error(), right)
	require.NotContains(t, logs.String(), wrong)
	require.NotContains(t, logs.String(), right)
	require.Contains(t, logs.String(), `"nats_password":"xxxxx"`, "the configuration is logged, redacted")

	nc, err := nats.Connect(ns.URL(), nats.UserInfo("paystream", right))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.Stream(context.Background(), "PAYMENTS")
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound, "nothing was provisioned")
}

// allSecretsAuth admits only a client that presents the user, password and
// token it expects and signs the server's nonce with the user nkey of a
// credentials file: a server that requires every NATS secret the worker can
// hold at once. (Outside operator mode the server drops the user JWT from
// the CONNECT before authentication sees it; the signature proves that the
// seed of the creds file was read and used.)
type allSecretsAuth struct {
	user, password, token, userPub string
}

func (a allSecretsAuth) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o.Username != a.user || o.Password != a.password || o.Token != a.token {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(o.Sig)
	if err != nil {
		return false
	}
	pub, err := nkeys.FromPublicKey(a.userPub)
	if err != nil {
		return false
	}
	return pub.Verify(c.GetNonce(), sig) == nil
}

// TestLogsHoldNoSecrets runs the worker at debug level with every secret it
// can be given (database password, NATS password, token and credentials
// file, gateway API key file) through successes, gateway failures (a
// simulator that requires the key and fails 30% of calls) and their
// retries, a NATS
// restart, a duplicate, a conflict and an invalid request carrying a card
// number, and checks that no log line holds a secret, the payment method or
// the card number.
func TestLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	natsPassword := randomString(t, "natspw-")
	natsToken := randomString(t, "natstok-")
	op := natstest.NewOperator(t) // for a real credentials file: seed and JWT
	const paymentMethod = "pm_secret_tok_123"
	const card = "4000 0566 5566 5556" // passes the Luhn check

	ns := natstest.New(t, natstest.Options{Configure: func(o *server.Options) {
		o.AlwaysEnableNonce = true
		o.CustomClientAuthentication = allSecretsAuth{user: "paystream", password: natsPassword,
			token: natsToken, userPub: op.UserPub}
	}})
	natsOpts := []nats.Option{nats.UserInfo("paystream", natsPassword), nats.Token(natsToken),
		nats.UserCredentials(op.CredsFile), nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	_, err := nats.Connect(ns.URL(), nats.UserInfo("paystream", natsPassword), nats.Token(natsToken))
	require.Error(t, err, "the server requires the credentials file too")

	dbURL, dbPassword := databaseWithPasswordRole(t)
	env := baseEnv(t, dbURL)
	env["PAYSTREAM_NATS_URL"] = ns.URL()
	env["PAYSTREAM_NATS_USER"] = "paystream"
	env["PAYSTREAM_NATS_PASSWORD"] = natsPassword
	env["PAYSTREAM_NATS_TOKEN"] = natsToken
	env["PAYSTREAM_NATS_CREDS"] = op.CredsFile
	// A gateway that requires an API key and fails, so that retries and
	// their errors are logged too.
	const gatewayKey = "sk_live_in_no_log_9d8c7b6a"
	gw := newKeyedSim(t, gatewayKey+"\n")
	gw.sim.SetConfig(sim.Config{ErrorRate: 0.3, SpareLookups: true})
	keyFile := filepath.Join(t.TempDir(), "gateway.key")
	replaceFile(t, keyFile, gatewayKey+"\n")
	env["PAYSTREAM_GATEWAY_URL"] = gw.url
	env["PAYSTREAM_GATEWAY_API_KEY_FILE"] = keyFile
	env["PAYSTREAM_RETRY_BACKOFF"] = "10ms"
	env["PAYSTREAM_RETRY_BACKOFF_MAX"] = "50ms"
	env["PAYSTREAM_BREAKER_FAILURES"] = "1000"
	env["PAYSTREAM_MAX_DELIVER"] = "50"
	w := startRun(t, env)

	js := clientJS(t, ns.URL(), natsOpts...)
	pool := newPool(t, dbURL)
	req := func(i int, amount int64) payment.Request {
		return payment.Request{PaymentID: fmt.Sprintf("p%d", i), MerchantID: "m1", CustomerID: "c1",
			AmountMinor: amount, Currency: "EUR", PaymentMethod: paymentMethod, Description: "order"}
	}
	dlqCount := func() uint64 {
		st, err := js.Stream(context.Background(), "PAYMENTS_DLQ")
		if err != nil {
			return 0
		}
		info, err := st.Info(context.Background())
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}

	const n = 20
	for i := range n {
		publishJSON(t, js, "payments.requests.m1", req(i, int64(1000+i)))
	}
	publishJSON(t, js, "payments.requests.m1", map[string]any{"payment_id": "bad1", "merchant_id": "m1",
		"amount_minor": 500, "currency": "EUR", "payment_method": paymentMethod,
		"metadata": map[string]string{"note": "card " + card}})
	for i := range n {
		waitFinal(t, pool, fmt.Sprintf("p%d", i))
	}
	require.Eventually(t, func() bool { return dlqCount() == 1 }, 20*time.Second, 20*time.Millisecond,
		"the invalid request is dead-lettered")

	// A NATS restart: disconnect and reconnect are logged, pulls fail and
	// recover. Then a duplicate, a conflict and more payments.
	ns.Restart()
	publishJSON(t, js, "payments.requests.m1", req(1, 1001))  // duplicate of p1
	publishJSON(t, js, "payments.requests.m1", req(2, 99999)) // conflict with p2
	for i := n; i < n+5; i++ {
		publishJSON(t, js, "payments.requests.m1", req(i, int64(1000+i)))
	}
	for i := n; i < n+5; i++ {
		waitFinal(t, pool, fmt.Sprintf("p%d", i))
	}
	require.Eventually(t, func() bool { return dlqCount() == 2 }, 20*time.Second, 20*time.Millisecond,
		"the conflict is dead-lettered")
	w.stop(t)
	st := gw.sim.Stats()
	require.Zero(t, st.Unauthorized, "every call carried the key")
	require.GreaterOrEqual(t, st.Charges, int64(n), "the payments went through the simulator")

	out := w.logs.String()
	// The logs are there to be searched: configuration, per-payment debug
	// lines, retries, the NATS restart and the dead letters.
	for _, want := range []string{
		"starting worker", `"payment_id":"p7"`, "retry later", "nats disconnected", "nats reconnected",
		`"reason":"invalid"`, `"reason":"conflict"`, `"database_url":"postgres://ps_role_`,
		`"nats_creds":"` + op.CredsFile + `"`, // the path, not the contents
		`"gateway_api_key_file":"` + keyFile + `"`,
	} {
		require.Contains(t, out, want)
	}
	secrets := map[string]string{
		"database password":  dbPassword,
		"NATS password":      natsPassword,
		"NATS token":         natsToken,
		"creds file seed":    op.UserSeed,
		"creds file JWT":     op.UserJWT,
		"payment method":     paymentMethod,
		"card number":        card,
		"card number digits": strings.ReplaceAll(card, " ", ""),
		"gateway API key":    gatewayKey,
	}
	lines := strings.Split(out, "\n")
	require.Greater(t, len(lines), n)
	for _, line := range lines {
		for what, secret := range secrets {
			require.NotContains(t, line, secret, "%s in a log line", what)
		}
	}
}

// databaseWithPasswordRole creates a test database and a login role with a
// password that may use it, and returns a URL that names the role and its
// password. The throwaway cluster trusts loopback connections, so the
// password is not checked, but it is in the URL the worker is given.
func databaseWithPasswordRole(t *testing.T) (dbURL, password string) {
	t.Helper()
	ctx := context.Background()
	adminURL, err := pgtest.Start()
	require.NoError(t, err)
	role := randomString(t, "ps_role_")
	password = randomString(t, "dbpw-")
	admin, err := pgx.Connect(ctx, adminURL)
	require.NoError(t, err)
	_, err = admin.Exec(ctx, "CREATE ROLE "+pgx.Identifier{role}.Sanitize()+" LOGIN PASSWORD '"+password+"'")
	require.NoError(t, admin.Close(ctx))
	require.NoError(t, err)
	// Registered before the database is made, so it runs after the
	// database (and the role's privileges in it) is dropped.
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Errorf("drop role: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize()); err != nil {
			t.Errorf("drop role: %v", err)
		}
	})

	ownerURL := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, ownerURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	r := pgx.Identifier{role}.Sanitize()
	for _, stmt := range []string{
		"GRANT USAGE ON SCHEMA public TO " + r,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO " + r,
		"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO " + r,
	} {
		_, err := conn.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	u, err := url.Parse(ownerURL)
	require.NoError(t, err)
	u.User = url.UserPassword(role, password)
	return u.String(), password
}
