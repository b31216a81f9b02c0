package pgtest

import (
	"context"
	"errors"
	"fmt"

	"github.com/paystream/paystream/internal/testenv/pgcluster"
)

// dirPrefix starts the name of every test cluster's temporary directory.
const dirPrefix = "paystream-pgtest-"

// cluster is the throwaway PostgreSQL cluster of a test binary, run as a
// child process (package pgcluster).
type cluster struct {
	c *pgcluster.Cluster
}

func (c *cluster) url() string { return c.c.URL() }

// startCluster creates and starts a new cluster.
func startCluster(ctx context.Context) (*cluster, error) {
	c, err := pgcluster.Start(ctx, pgcluster.Config{DirPrefix: dirPrefix})
	if errors.Is(err, pgcluster.ErrNoBinaries) {
		return nil, fmt.Errorf("pgtest: %w, or set %s", err, EnvDatabaseURL)
	}
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	return &cluster{c: c}, nil
}

// shutdown stops the server with a fast shutdown (connections terminated,
// clean checkpoint), keeping the data directory.
func (c *cluster) shutdown() error { return c.c.Shutdown(context.Background()) }

// launch starts the server again on the same port and data directory.
func (c *cluster) launch() error { return c.c.Launch(context.Background()) }

// restart is shutdown followed by launch on the same port.
func (c *cluster) restart() error { return c.c.Restart(context.Background()) }

// stop ends the server with an immediate shutdown and removes the
// cluster's directory.
func (c *cluster) stop() { _ = c.c.Stop() }
