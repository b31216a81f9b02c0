package sim

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMeterKeepsAWindow: the per-second counts go back one window from the
// latest second counted; older seconds are forgotten, so that the map of a
// long-running simulator stays bounded.
func TestMeterKeepsAWindow(t *testing.T) {
	t.Parallel()
	m := NewMeter(http.NotFoundHandler())
	m.SetWindow(10 * time.Second)
	const start = int64(1_000_000)
	for s := start; s < start+1000; s++ {
		m.count(s, false)
		m.count(s, s%2 == 0)
		require.LessOrEqual(t, m.Len(), 10, "second %d", s)
	}
	require.Equal(t, 10, m.Len())
	last := start + 999
	got := m.Seconds(time.Unix(last-12, 0), time.Unix(last+1, 0))
	require.Len(t, got, 13)
	for _, c := range got[:3] {
		require.Zero(t, c.Charges, "second %d is out of the window", c.Unix)
	}
	for _, c := range got[3:] {
		require.Equal(t, 2, c.Charges, "second %d", c.Unix)
	}

	// Narrowing the window forgets at once; a gap forgets all before it.
	m.SetWindow(3 * time.Second)
	require.Equal(t, 3, m.Len())
	m.count(last+3600, false)
	require.Equal(t, 1, m.Len())

	// The default is DefaultMeterWindow; a window under a second is one.
	require.Equal(t, int64(DefaultMeterWindow/time.Second), NewMeter(nil).window)
	m.SetWindow(0)
	m.count(last+3601, false)
	require.Equal(t, 1, m.Len())
}
