package localstack

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// A NATSConfig is written to the stack's directory and passed before the
// flags, which take precedence; SetNATSConfig changes it for the next start.
func TestNATSConfigFile(t *testing.T) {
	dir := t.TempDir()
	s := &Stack{dir: dir, natsStore: filepath.Join(dir, "nats"), natsPort: 4222, natsMonPort: 8222}
	args, err := s.natsArgs()
	require.NoError(t, err)
	require.NotContains(t, args, "--config")

	s.SetNATSConfig("jetstream { sync_interval: always }")
	args, err = s.natsArgs()
	require.NoError(t, err)
	path := filepath.Join(dir, "nats.conf")
	require.Equal(t, []string{"--config", path}, args[:2])
	require.Contains(t, args, "--store_dir")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "jetstream { sync_interval: always }\n", string(b))
}
