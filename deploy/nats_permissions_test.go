// Package deploy_test runs the example configurations of deploy/ on real
// servers and checks that the servers enforce them (docs/security.md). The
// compose file's own configuration, deploy/nats.conf, is checked by the
// repository root's deploy_test.go.
package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/internal/testenv/defaults"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/store"
	"github.com/paystream/paystream/telemetry"
)

func TestMain(m *testing.M) {
	pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true})
}

// permissionsConf is the example configuration under test.
const permissionsConf = "nats-permissions.conf"

// The users of permissionsConf and the environment variable of each one's
// password.
var passwordVars = map[string]string{ //nolint:gochecknoglobals // a constant table
	"merchant-a":  "PAYSTREAM_NATS_MERCHANT_A_PASSWORD",
	"merchant-b":  "PAYSTREAM_NATS_MERCHANT_B_PASSWORD",
	"worker":      "PAYSTREAM_NATS_WORKER_PASSWORD",
	"provisioner": "PAYSTREAM_NATS_PROVISIONER_PASSWORD",
	"operator":    "PAYSTREAM_NATS_OPERATOR_PASSWORD",
}

// inboxPrefix is the reply prefix each user may subscribe to.
func inboxPrefix(user string) string {
	switch user {
	case "worker", "provisioner":
		return "_INBOX"
	default:
		return "_INBOX_" + user
	}
}

// permServer is an embedded nats-server running permissionsConf.
type permServer struct {
	ns        *natstest.Server
	passwords map[string]string
}

// startPermServer loads permissionsConf as nats-server loads a -c file, with
// random passwords in the environment, and runs it on a free port with a
// temporary store. Tests that call it cannot run in parallel (t.Setenv).
func startPermServer(t *testing.T) *permServer {
	t.Helper()
	ps := &permServer{passwords: map[string]string{}}
	for user, env := range passwordVars {
		pw := user + "-" + randomToken(t)
		ps.passwords[user] = pw
		t.Setenv(env, pw)
	}
	ps.ns = natstest.New(t, natstest.Options{Configure: func(o *server.Options) {
		fromFile, err := server.ProcessConfigFile(permissionsConf)
		require.NoError(t, err, "nats-server rejects %s", permissionsConf)
		host, port, storeDir := o.Host, o.Port, o.StoreDir
		*o = *fromFile
		o.Host, o.Port, o.StoreDir, o.HTTPPort = host, port, storeDir, 0
		o.NoLog, o.NoSigs = true, true
	}})
	return ps
}

func randomToken(t *testing.T) string {
	t.Helper()
	return strings.ReplaceAll(nats.NewInbox()[len("_INBOX."):], ".", "")
}

// client is one user's connection; errs receives the asynchronous errors
// the server sends it (permission violations among them).
type client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

// connect connects as user with the user's inbox prefix.
func (ps *permServer) connect(t *testing.T, user string, opts ...nats.Option) *client {
	t.Helper()
	return ps.connectWithPrefix(t, user, inboxPrefix(user), opts...)
}

func (ps *permServer) connectWithPrefix(t *testing.T, user, prefix string, opts ...nats.Option) *client {
	t.Helper()
	c := &client{errs: make(chan error, 100)}
	opts = append([]nats.Option{
		nats.UserInfo(user, ps.passwords[user]),
		nats.CustomInboxPrefix(prefix),
		nats.PermissionErrOnSubscribe(true),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}),
	}, opts...)
	nc, err := nats.Connect(ps.ns.URL(), opts...)
	require.NoError(t, err, "connect as %s", user)
	t.Cleanup(nc.Close)
	c.nc = nc
	c.js, err = jetstream.New(nc)
	require.NoError(t, err)
	return c
}

// requireViolation waits for the server's permissions violation naming
// subject.
func (c *client) requireViolation(t *testing.T, subject string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
		case <-timeout:
			t.Fatalf("no permissions violation for %q from the server", subject)
		}
	}
}

// ctx5 is a context for one JetStream call.
func ctx5(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ctxRefused is a context for a JetStream call that the server refuses:
// the client sees no answer and gives up when it ends.
func ctxRefused(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// provision creates the streams and the consumer as the provisioner, as a
// worker with PAYSTREAM_PROVISION=true running as that user does.
func (ps *permServer) provision(t *testing.T) consumer.Config {
	t.Helper()
	cfg := defaults.Consumer()
	cfg.FetchMaxWait = 250 * time.Millisecond
	prov := ps.connect(t, "provisioner")
	require.NoError(t, consumer.Provision(ctx5(t), prov.js, cfg), "the provisioner provisions")
	return cfg
}

func requestBody(t *testing.T, id, merchant string) []byte {
	t.Helper()
	b, err := json.Marshal(payment.Request{PaymentID: id, MerchantID: merchant, AmountMinor: 1250,
		Currency: "EUR", PaymentMethod: "pm_card_visa"})
	require.NoError(t, err)
	return b
}

// subjectCount returns how many messages the stream holds on subject.
func subjectCount(t *testing.T, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	s, err := js.Stream(ctx5(t), stream)
	require.NoError(t, err)
	info, err := s.Info(ctx5(t), jetstream.WithSubjectFilter(subject))
	require.NoError(t, err)
	return info.State.Subjects[subject]
}

// TestMerchantPublishesOnlyItsOwnSubject: a publisher for merchant A gets
// its request stored, and the server refuses its request for merchant B, so
// that B's stream subject never holds it.
func TestMerchantPublishesOnlyItsOwnSubject(t *testing.T) {
	ps := startPermServer(t)
	cfg := ps.provision(t)
	admin := ps.connect(t, "provisioner")
	a := ps.connect(t, "merchant-a")

	ack, err := a.js.Publish(ctx5(t), "payments.requests.merchant-a", requestBody(t, "p-a", "merchant-a"))
	require.NoError(t, err, "merchant-a publishes for itself")
	require.Equal(t, cfg.Stream, ack.Stream)

	_, err = a.js.Publish(ctxRefused(t), "payments.requests.merchant-b", requestBody(t, "p-b", "merchant-b"))
	require.Error(t, err, "merchant-a got a PubAck for merchant-b")
	a.requireViolation(t, "payments.requests.merchant-b")
	require.Zero(t, subjectCount(t, admin.js, cfg.Stream, "payments.requests.merchant-b"))
	require.Equal(t, uint64(1), subjectCount(t, admin.js, cfg.Stream, "payments.requests.merchant-a"))

	// The checks of paystream's publish package pass with these rights.
	b := ps.connect(t, "merchant-b")
	_, err = b.js.Stream(ctx5(t), cfg.Stream)
	require.NoError(t, err)
	name, err := b.js.StreamNameBySubject(ctx5(t), "payments.requests.>")
	require.NoError(t, err)
	require.Equal(t, cfg.Stream, name)
}

// TestPublisherCannotReadOthersReplies: a merchant may subscribe to its own
// inbox prefix only; with _INBOX.> it would receive the requests that the
// workers fetch and the other merchants' PubAcks.
func TestPublisherCannotReadOthersReplies(t *testing.T) {
	ps := startPermServer(t)
	ps.provision(t)
	for _, user := range []string{"merchant-a", "operator"} {
		c := ps.connectWithPrefix(t, user, "_INBOX")
		sub, err := c.nc.SubscribeSync("_INBOX.>")
		require.NoError(t, err) // the refusal comes asynchronously
		_, err = sub.NextMsg(5 * time.Second)
		require.ErrorIs(t, err, nats.ErrPermissionViolation, "%s subscribed to _INBOX.>", user)
	}
}

// TestWorkerCannotPublishRequests: the worker's publish of a request, its
// provisioning of streams, and so the sweeper's re-publication (the known
// gap of deploy/nats-permissions.conf) are refused.
func TestWorkerCannotPublishRequests(t *testing.T) {
	ps := startPermServer(t)
	cfg := ps.provision(t)
	admin := ps.connect(t, "provisioner")
	w := ps.connect(t, "worker")

	_, err := w.js.Publish(ctxRefused(t), "payments.requests.merchant-a", requestBody(t, "p-w", "merchant-a"))
	require.Error(t, err, "the worker got a PubAck for a request")
	w.requireViolation(t, "payments.requests.merchant-a")
	require.Zero(t, subjectCount(t, admin.js, cfg.Stream, "payments.requests.merchant-a"))

	// No stream administration without the provisioner's rights: a worker
	// with PAYSTREAM_PROVISION=true retries provisioning under this user and
	// never starts work.
	require.Error(t, consumer.Provision(ctxRefused(t), w.js, cfg), "the worker user provisions streams")
	w.requireViolation(t, "$JS.API.STREAM.UPDATE.PAYMENTS")
}

// TestOperatorReadsResultsNotRequests: the read-only operator reads the
// results and dead-letter streams, but can neither consume the requests
// stream (bind to or fetch from the workers' consumer, create its own
// consumer on it) nor publish anything.
func TestOperatorReadsResultsNotRequests(t *testing.T) {
	ps := startPermServer(t)
	cfg := ps.provision(t)
	admin := ps.connect(t, "provisioner")
	a := ps.connect(t, "merchant-a")
	_, err := a.js.Publish(ctx5(t), "payments.requests.merchant-a", requestBody(t, "p-op", "merchant-a"))
	require.NoError(t, err)
	w := ps.connect(t, "worker")
	_, err = w.js.Publish(ctx5(t), "payments.results.succeeded", []byte(`{"payment_id":"p-op"}`))
	require.NoError(t, err, "the worker publishes an outcome")
	_, err = w.js.Publish(ctx5(t), "payments.dlq.invalid", []byte(`{}`))
	require.NoError(t, err, "the worker publishes a dead letter")

	op := ps.connect(t, "operator")
	for _, stream := range []string{cfg.ResultsStream, cfg.DLQStream} {
		s, err := op.js.Stream(ctx5(t), stream)
		require.NoError(t, err, "operator: stream info of %s", stream)
		require.Equal(t, uint64(1), s.CachedInfo().State.Msgs)
		oc, err := op.js.OrderedConsumer(ctx5(t), stream, jetstream.OrderedConsumerConfig{})
		require.NoError(t, err, "operator: ordered consumer on %s", stream)
		msgs, err := oc.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		got := 0
		for range msgs.Messages() {
			got++
		}
		require.NoError(t, msgs.Error())
		require.Equal(t, 1, got, "operator reads %s", stream)
	}

	// The requests stream: neither the workers' consumer nor one of its own.
	_, err = op.js.Consumer(ctxRefused(t), cfg.Stream, cfg.Consumer)
	require.Error(t, err, "operator binds to the workers' consumer")
	_, err = op.js.OrderedConsumer(ctxRefused(t), cfg.Stream, jetstream.OrderedConsumerConfig{})
	require.Error(t, err, "operator creates a consumer on the requests stream")
	_, err = op.js.CreateConsumer(ctxRefused(t), cfg.Stream, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy})
	require.Error(t, err, "operator creates a consumer on the requests stream")
	next := "$JS.API.CONSUMER.MSG.NEXT." + cfg.Stream + "." + cfg.Consumer
	_, err = op.nc.Request(next, []byte(`{"batch":1,"expires":1000000000}`), 2*time.Second)
	require.Error(t, err, "operator fetches from the workers' consumer")
	op.requireViolation(t, next)
	cons, err := admin.js.Consumer(ctx5(t), cfg.Stream, cfg.Consumer)
	require.NoError(t, err)
	require.Zero(t, cons.CachedInfo().Delivered.Consumer, "a request was delivered to the operator")
	require.Equal(t, uint64(1), cons.CachedInfo().NumPending)

	_, err = op.js.Publish(ctxRefused(t), "payments.requests.merchant-a", requestBody(t, "p-op2", "merchant-a"))
	require.Error(t, err, "operator publishes a request")
	op.requireViolation(t, "payments.requests.merchant-a")
}

// TestWorkerRunsUnderItsRights runs the real consumer path (consumer,
// processing, store, a gateway) as the worker user against streams the
// provisioner made: merchant A's payment is charged and announced; a body
// naming merchant B on A's subject — what a compromised publisher for A can
// still do — is dead-lettered invalid by the worker's subject check, the
// second line behind the server's permissions. The worker also uses the
// heartbeat KV bucket the provisioner created.
func TestWorkerRunsUnderItsRights(t *testing.T) {
	ps := startPermServer(t)
	cfg := ps.provision(t)
	admin := ps.connect(t, "provisioner")
	_, err := admin.js.CreateOrUpdateKeyValue(ctx5(t), jetstream.KeyValueConfig{Bucket: "paystream_workers", TTL: time.Minute})
	require.NoError(t, err, "the provisioner creates the heartbeat bucket")

	w := ps.connect(t, "worker")
	pool := pgtest.NewPool(t)
	reg := prometheus.NewRegistry()
	m := telemetry.New(reg)
	b := store.NewBatcher(store.New(pool), store.BatcherConfig{})
	pcfg := defaults.Processing("perm-worker")
	proc := processing.New(pcfg, b, gateway.NewFake(gateway.FakeConfig{Seed: 1}), zerolog.Nop(), m)
	cons := consumer.New(w.js, cfg, proc, zerolog.Nop(), m)
	ctx, cancel := context.WithCancel(context.Background())
	bctx, bcancel := context.WithCancel(context.Background())
	var bwg, cwg sync.WaitGroup
	runErr := make(chan error, 1)
	bwg.Go(func() { _ = b.Run(bctx) })
	cwg.Go(func() { runErr <- cons.Run(ctx) })
	t.Cleanup(func() {
		cancel() // the consumer drains, then the batcher stops
		cwg.Wait()
		bcancel()
		bwg.Wait()
	})

	a := ps.connect(t, "merchant-a")
	_, err = a.js.Publish(ctx5(t), "payments.requests.merchant-a", requestBody(t, "p-ok", "merchant-a"))
	require.NoError(t, err)
	_, err = a.js.Publish(ctx5(t), "payments.requests.merchant-a", requestBody(t, "p-forged", "merchant-b"))
	require.NoError(t, err, "the server cannot see the body: the worker's check must")

	require.Eventually(t, func() bool {
		return subjectCount(t, admin.js, cfg.ResultsStream, "payments.results.succeeded") == 1 &&
			subjectCount(t, admin.js, cfg.DLQStream, "payments.dlq.invalid") == 1
	}, 20*time.Second, 20*time.Millisecond, "an outcome for p-ok and an invalid dead letter for p-forged")
	var status string
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT status FROM payments WHERE payment_id = 'p-ok'").Scan(&status))
	require.Equal(t, string(payment.StatusSucceeded), status)
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM payments WHERE payment_id = 'p-forged'").Scan(&n))
	require.Zero(t, n, "the forged request reached the ledger")
	require.Eventually(t, func() bool {
		c, err := admin.js.Consumer(ctx5(t), cfg.Stream, cfg.Consumer)
		return err == nil && c.CachedInfo().NumAckPending == 0 && c.CachedInfo().NumPending == 0
	}, 10*time.Second, 20*time.Millisecond, "the worker acknowledged both")

	// The heartbeat bucket.
	kv, err := w.js.KeyValue(ctx5(t), "paystream_workers")
	require.NoError(t, err, "worker binds to the heartbeat bucket")
	_, err = kv.Put(ctx5(t), "perm-worker", []byte("alive"))
	require.NoError(t, err, "worker writes its heartbeat")
	e, err := kv.Get(ctx5(t), "perm-worker")
	require.NoError(t, err, "worker reads a heartbeat")
	require.Equal(t, "alive", string(e.Value()))
	keys, err := kv.ListKeys(ctx5(t))
	require.NoError(t, err, "worker lists the heartbeats")
	var listed []string
	for k := range keys.Keys() {
		listed = append(listed, k)
	}
	require.Equal(t, []string{"perm-worker"}, listed)

	cancel()
	require.NoError(t, <-runErr)
	select {
	case err := <-w.errs:
		t.Fatalf("the worker met a refusal: %v", err)
	default:
	}
}
