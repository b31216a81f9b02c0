package sim_test

import (
	"bytes"
	"encoding/json"
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

	"github.com/paystream/paystream/gateway/sim"
)

// call sends a charge (or, with lookup, a lookup) with the API key given
// ("" for none) and returns the answer.
func call(t *testing.T, s http.Handler, apiKey, idemKey string, lookup bool) answer {
	t.Helper()
	var r *http.Request
	if lookup {
		r = httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v1/charges?idempotency_key="+idemKey, nil)
	} else {
		r = httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/charges", strings.NewReader(okBody))
		r.Header.Set("Idempotency-Key", idemKey)
	}
	if apiKey != "" {
		r.Header.Set("Authorization", "Bearer "+apiKey)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	var a answer
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &a), w.Body.String())
	a.Status, a.Header = w.Code, w.Header()
	return a
}

func TestParseKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, data, err string
		accepted        int
	}{
		{"one key", "sk_a\n", "", 1},
		{"overlap", "# rotation: both\nsk_old\n\nsk_new\n", "", 2},
		{"revoked", "sk_new\nrevoked sk_old\n", "", 1},
		{"no accepted key", "# nothing\nrevoked sk_old\n", "lists no accepted key", 0},
		{"empty", "", "lists no accepted key", 0},
		{"two words", "sk_a\nsk_secret b\n", "line 2", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k, err := sim.ParseKeys([]byte(tc.data))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.NotContains(t, err.Error(), "sk_")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.accepted, k.Len())
		})
	}
}

// TestRequireKeys checks the answers to every kind of credential, on a
// charge and a lookup, the counts in Stats, and that the test endpoints
// stay open.
func TestRequireKeys(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{})
	require.Equal(t, http.StatusCreated, call(t, s, "", "open", false).Status, "open without RequireKeys")
	s.RequireKeys(sim.NewKeys([]string{"sk_a", "sk_b"}, []string{"sk_revoked"}))

	for _, lookup := range []bool{false, true} {
		a := call(t, s, "", "k1", lookup)
		require.Equal(t, http.StatusUnauthorized, a.Status)
		require.Equal(t, sim.CodeUnauthorized, a.Error.Code)
		require.Contains(t, a.Header.Get("WWW-Authenticate"), "Bearer")
		a = call(t, s, "sk_wrong", "k1", lookup)
		require.Equal(t, http.StatusUnauthorized, a.Status)
		require.Equal(t, sim.CodeUnauthorized, a.Error.Code)
		a = call(t, s, "sk_revoked", "k1", lookup)
		require.Equal(t, http.StatusForbidden, a.Status)
		require.Equal(t, sim.CodeForbidden, a.Error.Code)
	}
	require.Equal(t, sim.KeyUnknown, s.Lookup("k1").State, "a refused charge reaches no ledger")

	require.Equal(t, http.StatusCreated, call(t, s, "sk_a", "k1", false).Status)
	require.Equal(t, http.StatusCreated, call(t, s, "sk_b", "k1", false).Status, "any accepted key: a replay")
	require.Equal(t, http.StatusOK, call(t, s, "sk_b", "k1", true).Status)
	st := s.Stats()
	require.EqualValues(t, 4, st.Unauthorized)
	require.EqualValues(t, 2, st.Forbidden)
	require.EqualValues(t, 2, st.Charges, "open and k1")

	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v1/stats", nil))
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), `"unauthorized":4`)
	require.Contains(t, w.Body.String(), `"forbidden":2`)

	s.RequireKeys(nil)
	require.Equal(t, http.StatusCreated, call(t, s, "", "k2", false).Status, "open again")
}

// TestKeysFileRotation rotates the simulator's key the way an operator
// does, with an injected clock: add the new key (old and new both
// accepted: the overlap window), then revoke the old one. A keys file that
// becomes unusable keeps the previous keys; no log line holds a key.
func TestKeysFileRotation(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys")
	write := func(content string) {
		require.NoError(t, os.WriteFile(path+".tmp", []byte(content), 0o600))
		require.NoError(t, os.Rename(path+".tmp", path))
	}
	write("sk_old\n")
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	tick := func() { now.Add(int64(time.Second)) }
	var logs lockedBuffer
	kf, err := sim.OpenKeysFile(path, zerolog.New(&logs), clock)
	require.NoError(t, err)
	s := newSim(t, sim.Config{})
	s.RequireKeys(kf)

	require.Equal(t, http.StatusCreated, call(t, s, "sk_old", "r1", false).Status)
	require.Equal(t, http.StatusUnauthorized, call(t, s, "sk_new", "r2", false).Status)

	write("sk_old\nsk_new\n") // overlap: both accepted
	tick()
	require.Equal(t, http.StatusCreated, call(t, s, "sk_new", "r2", false).Status)
	require.Equal(t, http.StatusCreated, call(t, s, "sk_old", "r3", false).Status)

	write("sk_new\nrevoked sk_old\n") // the old key is done
	tick()
	require.Equal(t, http.StatusForbidden, call(t, s, "sk_old", "r4", false).Status)
	require.Equal(t, http.StatusCreated, call(t, s, "sk_new", "r4", false).Status)

	write("# emptied by mistake\n")
	tick()
	require.Equal(t, http.StatusCreated, call(t, s, "sk_new", "r5", false).Status, "an unusable file keeps the keys")

	out := logs.String()
	require.Contains(t, out, "cannot be used")
	for _, k := range []string{"sk_old", "sk_new"} {
		require.NotContains(t, out, k)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
