package demo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLeakScanFindsThePlantedKey is the scan's own control: a key planted
// in a log file and in a page is found, and a scan that searched nothing
// of a kind fails instead of passing.
func TestLeakScanFindsThePlantedKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, simKeys, workerKey, err := writeAPIKey(dir)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(key, "sk_demo_"))
	for _, p := range []string{simKeys, workerKey} {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.Equal(t, key+"\n", string(b))
		st, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "w1.log"), []byte(`{"level":"info","message":"clean"}`+"\n"), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sub", "w2.log"), []byte(`{"auth":"Bearer `+key+`"}`+"\n"), 0o600))

	scan := newLeakScan(key)
	scan.logs(dir)
	scan.check("pages", "metrics", []byte("paystream_payments_total 3\n"))
	scan.check("stream messages", "PAYMENTS_DLQ message 1", []byte("error: "+key))
	problems, summary := scan.verdict()
	require.Equal(t, "FOUND in 2 places", summary)
	joined := strings.Join(problems, "\n")
	require.Contains(t, joined, "the gateway API key appears in 2 places")
	require.Contains(t, joined, filepath.Join(dir, "sub", "w2.log"))
	require.Contains(t, joined, "PAYMENTS_DLQ message 1")
	require.Contains(t, joined, "no table rows searched", "an empty search does not pass")
	require.NotContains(t, joined, key, "the verdict names places, not the key")

	clean := newLeakScan(key)
	for _, kind := range []string{"log files", "pages", "stream messages", "table rows", "demo output"} {
		clean.check(kind, kind, []byte("nothing secret"))
	}
	problems, summary = clean.verdict()
	require.Empty(t, problems)
	require.Equal(t, "not found in 1 log files, 1 pages, 1 stream messages, 1 table rows, 1 demo output", summary)
}
