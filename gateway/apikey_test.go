package gateway_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/payment"
)

// clock is a settable time for KeyFile and KeysFile.
type clock struct{ now atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.now.Store(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.now.Load()) }
func (c *clock) Advance(d time.Duration) { c.now.Add(int64(d)) }

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Write a new file and rename it over the old one, as a careful
	// operator (and a Kubernetes secret volume) does.
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, data, want, err string
	}{
		{"plain", "sk_test_abc", "sk_test_abc", ""},
		{"trailing newline", "sk_test_abc\n", "sk_test_abc", ""},
		{"surrounding whitespace", "  \tsk_test_abc \r\n\n", "sk_test_abc", ""},
		{"empty", "", "", "holds no key"},
		{"whitespace only", " \n\t\n", "", "holds no key"},
		{"two words", "sk_a sk_b", "", "one key expected"},
		{"two lines", "sk_a\nsk_b\n", "", "one key expected"},
		{"control character", "sk_\x01a", "", "one key expected"},
		{"non-ASCII", "sk_é", "", "one key expected"},
		{"too long", strings.Repeat("k", 4097), "", "longer than 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := gateway.ParseKey([]byte(tc.data))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				if len(tc.data) < 100 && strings.TrimSpace(tc.data) != "" {
					require.NotContains(t, err.Error(), strings.TrimSpace(tc.data), "the error quotes the key")
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

// TestKeyFileRotates changes the key file under a running KeyFile, with an
// injected clock: the new key is used once the recheck interval has
// passed, a file that becomes empty, malformed or missing keeps the old key
// with one warning that does not quote it, and a good file is taken again.
func TestKeyFileRotates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.key")
	writeFile(t, path, "sk_old_1111\n")
	clk := newClock()
	var logs syncBuffer
	kf, err := gateway.OpenKeyFile(gateway.KeyFileConfig{Path: path, Logger: zerolog.New(&logs), NowFunc: clk.Now})
	require.NoError(t, err)
	require.Equal(t, "sk_old_1111", kf.Key())
	require.NotContains(t, kf.String(), "sk_old")

	writeFile(t, path, "sk_new_2222\n")
	require.Equal(t, "sk_old_1111", kf.Key(), "read again before the interval passed")
	clk.Advance(gateway.DefaultKeyRecheck)
	require.Equal(t, "sk_new_2222", kf.Key())

	for _, bad := range []func(){
		func() { writeFile(t, path, "") },
		func() { writeFile(t, path, "two words\n") },
		func() { require.NoError(t, os.Remove(path)) },
	} {
		bad()
		for range 3 {
			clk.Advance(gateway.DefaultKeyRecheck)
			require.Equal(t, "sk_new_2222", kf.Key(), "a broken file keeps the previous key")
		}
	}
	writeFile(t, path, "sk_third_3333")
	clk.Advance(gateway.DefaultKeyRecheck)
	require.Equal(t, "sk_third_3333", kf.Key())

	out := logs.String()
	require.Equal(t, 1, strings.Count(out, "cannot be used"), "one warning until the file is good again:\n%s", out)
	require.Contains(t, out, "readable again")
	require.Equal(t, 2, strings.Count(out, "changed: new contents in use"), out)
	require.Contains(t, out, path)
	for _, key := range []string{"sk_old_1111", "sk_new_2222", "sk_third_3333", "two words"} {
		require.NotContains(t, out, key)
	}
}

// TestKeyFileFollowsSymlinkSwap rotates the key the way a Kubernetes secret
// volume does: the key file is a symlink through "..data", a symlink to a
// timestamped directory, and an update swaps "..data" atomically.
func TestKeyFileFollowsSymlinkSwap(t *testing.T) {
	t.Parallel()
	vol := t.TempDir()
	version := func(name, key string) {
		require.NoError(t, os.Mkdir(filepath.Join(vol, name), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(vol, name, "api-key"), []byte(key), 0o600))
		tmp := filepath.Join(vol, "..data_tmp")
		require.NoError(t, os.Symlink(name, tmp))
		require.NoError(t, os.Rename(tmp, filepath.Join(vol, "..data")))
	}
	version("..2026_12_01_v1", "sk_v1")
	require.NoError(t, os.Symlink(filepath.Join("..data", "api-key"), filepath.Join(vol, "api-key")))

	clk := newClock()
	kf, err := gateway.OpenKeyFile(gateway.KeyFileConfig{Path: filepath.Join(vol, "api-key"), Logger: zerolog.Nop(), NowFunc: clk.Now})
	require.NoError(t, err)
	require.Equal(t, "sk_v1", kf.Key())

	version("..2026_12_01_v2", "sk_v2")
	require.NoError(t, os.RemoveAll(filepath.Join(vol, "..2026_12_01_v1")))
	clk.Advance(gateway.DefaultKeyRecheck)
	require.Equal(t, "sk_v2", kf.Key())
}

func TestOpenKeyFileFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.key")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))
	twoWords := filepath.Join(dir, "two.key")
	require.NoError(t, os.WriteFile(twoWords, []byte("sk_secret_a sk_secret_b"), 0o600))
	for name, path := range map[string]string{"missing": filepath.Join(dir, "nope"), "empty": empty, "two words": twoWords, "directory": dir} {
		t.Run(name, func(t *testing.T) {
			_, err := gateway.OpenKeyFile(gateway.KeyFileConfig{Path: path})
			require.Error(t, err)
			require.Contains(t, err.Error(), "gateway API key file")
			require.NotContains(t, err.Error(), "sk_secret")
		})
	}
}

// TestHTTPSendsAPIKey checks the header on a charge and a lookup against a
// simulator that requires the key, and that no header goes without one.
func TestHTTPSendsAPIKey(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Config{}, zerolog.Nop(), nil)
	s.RequireKeys(sim.NewKeys([]string{"sk_right"}, []string{"sk_revoked"}))
	var seen atomic.Pointer[string]
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		seen.Store(&h)
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	client := func(key gateway.KeySource) *gateway.HTTP {
		c, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: ts.URL, APIKey: key})
		require.NoError(t, err)
		t.Cleanup(c.Close)
		return c
	}
	ctx := t.Context()

	right := client(staticKey("sk_right"))
	res, err := right.Charge(ctx, testCharge("k1", 1000))
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, res.Status)
	require.Equal(t, "Bearer sk_right", *seen.Load())
	found, err := right.Lookup(ctx, "k1")
	require.NoError(t, err)
	require.True(t, found.Found)
	require.Equal(t, "Bearer sk_right", *seen.Load())

	for name, tc := range map[string]struct {
		key    gateway.KeySource
		status int
		header string
	}{
		"no key source": {nil, http.StatusUnauthorized, ""},
		"empty key":     {staticKey(""), http.StatusUnauthorized, ""},
		"wrong key":     {staticKey("sk_wrong"), http.StatusUnauthorized, "Bearer sk_wrong"},
		"revoked key":   {staticKey("sk_revoked"), http.StatusForbidden, "Bearer sk_revoked"},
	} {
		c := client(tc.key)
		_, err := c.Charge(ctx, testCharge("k2", 1000))
		ge := requireGatewayError(t, err, payment.ClassUnauthorized, tc.status)
		require.True(t, ge.Class.Misconfigured(), name)
		require.True(t, ge.Class.BreakerFailure(), name)
		require.Equal(t, tc.header, *seen.Load(), name)
		_, err = c.Lookup(ctx, "k1")
		requireGatewayError(t, err, payment.ClassUnauthorized, tc.status)
		if k, ok := tc.key.(staticKey); ok && k != "" {
			require.NotContains(t, err.Error(), string(k), "the error quotes the key")
		}
	}
	require.Zero(t, s.ChargesFor("k2"), "a refused call charges nothing")
	st := s.Stats()
	require.EqualValues(t, 6, st.Unauthorized)
	require.EqualValues(t, 2, st.Forbidden)
}

type staticKey string

func (k staticKey) Key() string { return string(k) }

// TestHTTPScrubsAnEchoedKey: a gateway that quotes the key it refused in
// its error message does not get it into the client's error.
func TestHTTPScrubsAnEchoedKey(t *testing.T) {
	t.Parallel()
	const key = "sk_echoed_1234abcd"
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"code":"unauthorized","message":"Invalid API key provided: ` +
			strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ") + `"}}`))
	}))
	t.Cleanup(ts.Close)
	c, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: ts.URL, APIKey: staticKey(key)})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	_, err = c.Charge(t.Context(), testCharge("e1", 1000))
	ge := requireGatewayError(t, err, payment.ClassUnauthorized, http.StatusUnauthorized)
	require.Contains(t, ge.Error(), "Invalid API key provided: xxxxx")
	require.NotContains(t, ge.Error(), key)
	_, err = c.Lookup(t.Context(), "e1")
	require.NotContains(t, err.Error(), key)
}
