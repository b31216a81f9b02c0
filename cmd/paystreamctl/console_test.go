package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestConsoleUsage(t *testing.T) {
	t.Parallel()
	e := &env{lookupEnv: envFrom(nil), stdout: io.Discard, stderr: io.Discard}
	for _, args := range [][]string{
		{"console", "--allow-actions"},
		{"console", "--basic-auth-file", "x", "--proxy-user-header", "X-User"},
		{"console", "--refresh", "10ms"},
		{"console", "--basic-auth-file", filepath.Join(t.TempDir(), "missing")},
		{"console", "extra"},
	} {
		require.Equal(t, exitUsage, run(t.Context(), args, e), "%q", args)
	}
}

// TestConsoleServes starts `paystreamctl console` on a fleet, fetches the
// overview with a user's password, and stops it as SIGTERM would.
func TestConsoleServes(t *testing.T) {
	f := startFleet(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	require.NoError(t, err)
	users := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(users, []byte("# operators\nalice:"+string(hash)+"\n"), 0o600))

	var stdout, stderr lockedBuffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"console", "--addr", "127.0.0.1:0", "--allow-actions", "--basic-auth-file", users},
			&env{lookupEnv: envFrom(f.env), stdout: &stdout, stderr: &stderr})
	}()
	re := regexp.MustCompile(`http://127\.0\.0\.1:\d+/`)
	require.Eventually(t, func() bool { return re.MatchString(stdout.String()) }, 20*time.Second, 10*time.Millisecond, "%s", &stderr)
	require.Contains(t, stdout.String(), "actions allowed; 1 basic-auth users")
	url := re.FindString(stdout.String())

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	req.SetBasicAuth("alice", "secret")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), "signed in as <strong>alice</strong>")

	cancel()
	select {
	case code := <-done:
		require.Equal(t, exitOK, code, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("console did not stop")
	}
}
