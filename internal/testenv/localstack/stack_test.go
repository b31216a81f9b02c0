package localstack_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/internal/testenv/localstack"
	"github.com/paystream/paystream/internal/testenv/pgcluster"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// binaries builds the stack's binaries once per test binary.
func binaries(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs real processes")
	}
	if _, err := pgcluster.FindBinDir(); errors.Is(err, pgcluster.ErrNoBinaries) {
		t.Skip(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	require.NoError(t, localstack.Build(ctx, dir))
	return dir
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func TestStackEndToEnd(t *testing.T) {
	bin := binaries(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	s, err := localstack.Start(ctx, localstack.Config{BinDir: bin, Log: &progress, StopTimeout: 20 * time.Second})
	require.NoError(t, err)
	closed := false
	defer func() {
		if !closed {
			_ = s.Close()
		}
	}()
	require.Contains(t, progress.String(), "nats-server")
	require.Contains(t, progress.String(), "migrations")

	// Postgres is migrated.
	conn, err := pgx.Connect(ctx, s.DatabaseURL())
	require.NoError(t, err)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM payments").Scan(&n))
	require.NoError(t, conn.Close(ctx))

	sim, simURL, err := s.StartGatewaySim(ctx, "--seed", "1")
	require.NoError(t, err)
	require.Equal(t, strings.TrimPrefix(simURL, "http://"), sim.HTTPAddr())

	// Short timeouts: a message delivered to a worker just killed comes back
	// after the ack wait.
	workerEnv := map[string]string{
		"PAYSTREAM_GATEWAY_URL":      simURL,
		"PAYSTREAM_GATEWAY_TIMEOUT":  "1s",
		"PAYSTREAM_LEASE":            "3500ms",
		"PAYSTREAM_ACK_WAIT":         "3s",
		"PAYSTREAM_SHUTDOWN_TIMEOUT": "5s",
	}
	w1, err := s.StartWorker(ctx, "w1", workerEnv)
	require.NoError(t, err)
	require.NotEmpty(t, w1.HTTPAddr())
	require.FileExists(t, filepath.Join(s.Dir(), "w1.log"))

	nc, err := nats.Connect(s.NATSURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	pub, err := publish.New(ctx, js, publish.Config{})
	require.NoError(t, err)

	pay := func(id string) {
		t.Helper()
		_, err := pub.Publish(ctx, &payment.Request{PaymentID: id, MerchantID: "m1", AmountMinor: 1000,
			Currency: "EUR", PaymentMethod: "pm_card_visa"})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			conn, err := pgx.Connect(ctx, s.DatabaseURL())
			if err != nil {
				return false
			}
			defer conn.Close(ctx)
			var status string
			err = conn.QueryRow(ctx, "SELECT status FROM payments WHERE idempotency_key = $1", id).Scan(&status)
			return err == nil && status == "succeeded"
		}, time.Minute, 50*time.Millisecond, "payment %s not recorded", id)
	}
	pay("p1")

	rss, err := w1.PeakRSS()
	require.NoError(t, err)
	require.Greater(t, rss, int64(1<<20))

	t.Run("restart NATS", func(t *testing.T) {
		old := s.NATS()
		url := s.NATSURL()
		require.NoError(t, s.RestartNATS(ctx))
		require.True(t, old.Exited())
		require.NotEqual(t, old.PID(), s.NATS().PID())
		require.Equal(t, url, s.NATSURL())
		// The store survived: the stream still has the first message.
		require.Eventually(t, func() bool {
			st, err := js.Stream(ctx, "PAYMENTS")
			return err == nil && st.CachedInfo().State.Msgs == 1
		}, 30*time.Second, 50*time.Millisecond)
		pay("p2")
	})

	t.Run("restart Postgres", func(t *testing.T) {
		require.NoError(t, s.RestartPostgres(ctx))
		pay("p3")
	})

	t.Run("kill -9 and restart a worker", func(t *testing.T) {
		w2, err := s.StartWorker(ctx, "w2", workerEnv)
		require.NoError(t, err)
		require.NoError(t, w2.Kill())
		code, err := w2.Wait(ctx)
		require.NoError(t, err)
		require.Equal(t, 128+int(syscall.SIGKILL), code)
		require.ErrorIs(t, w2.Kill(), os.ErrProcessDone)
		rss, err := w2.PeakRSS()
		require.NoError(t, err, "the last sample stays available after exit")
		require.Positive(t, rss)

		again, err := s.StartWorker(ctx, "w2", workerEnv)
		require.NoError(t, err)
		require.NotEqual(t, w2.PID(), again.PID())
		// Started again under the same name, it appends to the same log.
		require.Equal(t, w2.LogPath(), again.LogPath())
		require.NoError(t, w1.Kill())
		pay("p4")
	})

	t.Run("SIGTERM drains and exits 0", func(t *testing.T) {
		w3, err := s.StartWorker(ctx, "w3", workerEnv)
		require.NoError(t, err)
		require.NoError(t, w3.Signal(syscall.SIGTERM))
		code, err := w3.Wait(ctx)
		require.NoError(t, err)
		require.Equal(t, 0, code)
		require.ErrorIs(t, w3.Signal(syscall.SIGTERM), os.ErrProcessDone)
	})

	t.Run("a worker that cannot start", func(t *testing.T) {
		_, err := s.StartWorker(ctx, "bad", map[string]string{"PAYSTREAM_GATEWAY_URL": ""})
		require.ErrorContains(t, err, "exited with code 1")
	})

	procs := s.Processes()
	dir := s.Dir()
	closed = true
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")
	for _, p := range procs {
		require.True(t, p.Exited(), p.Name())
		require.False(t, alive(p.PID()), p.Name())
	}
	require.NoDirExists(t, dir)
	_, err = s.StartWorker(ctx, "late", workerEnv)
	require.Error(t, err)
}

func TestStartNeedsBinaries(t *testing.T) {
	t.Parallel()
	_, err := localstack.Start(t.Context(), localstack.Config{BinDir: t.TempDir()})
	require.ErrorContains(t, err, "make build nats-server")
}
