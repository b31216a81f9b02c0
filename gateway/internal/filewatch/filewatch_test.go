package filewatch_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/gateway/internal/filewatch"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func parse(b []byte) (string, error) {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", errors.New("empty")
	}
	return s, nil
}

func eq(a, b string) bool { return a == b }

// TestGetConcurrently reads the value from many goroutines while the file
// changes and the clock moves: every value seen is one the file held, and
// the last one is taken.
func TestGetConcurrently(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "f")
	write := func(s string) {
		require.NoError(t, os.WriteFile(path+".tmp", []byte(s), 0o600))
		require.NoError(t, os.Rename(path+".tmp", path))
	}
	write("v0")
	var now atomic.Int64
	f, err := filewatch.Open(filewatch.Config{Path: path, Logger: zerolog.Nop(),
		NowFunc: func() time.Time { return time.Unix(0, now.Load()) }}, parse, eq)
	require.NoError(t, err)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad atomic.Value
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if v := f.Get(); !strings.HasPrefix(v, "v") {
					bad.Store(v)
				}
			}
		})
	}
	for i := 1; i <= 50; i++ {
		write("v" + strings.Repeat("x", i))
		now.Add(int64(time.Second))
	}
	close(stop)
	wg.Wait()
	require.Nil(t, bad.Load())
	now.Add(int64(time.Second))
	require.Equal(t, "v"+strings.Repeat("x", 50), f.Get())
}

func TestOpenFails(t *testing.T) {
	t.Parallel()
	_, err := filewatch.Open(filewatch.Config{}, parse, eq)
	require.Error(t, err)
	big := filepath.Join(t.TempDir(), "big")
	require.NoError(t, os.WriteFile(big, make([]byte, filewatch.MaxBytes+1), 0o600))
	_, err = filewatch.Open(filewatch.Config{Path: big, What: "key file"}, parse, eq)
	require.ErrorContains(t, err, "key file")
	require.ErrorContains(t, err, "larger than")
}
