package natstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// clusterReadyTimeout bounds how long NewCluster and Restart wait for the
// JetStream meta group to elect a leader and take in every node.
const clusterReadyTimeout = 30 * time.Second

// Cluster is a JetStream cluster of embedded servers owned by a test: every
// node listens on loopback with its own client port (random at first start,
// then kept) and a fixed cluster port, routes to every other node, and keeps
// its store in its own temporary directory. Nodes are numbered from 0. The
// methods are safe for concurrent use. Every node is shut down by t.Cleanup.
type Cluster struct {
	t     testing.TB
	name  string
	opts  Options
	dir   string // parent of the nodes' store directories
	nodes []*node
}

// node is one server of a Cluster.
type node struct {
	name        string
	storeDir    string
	clusterPort int
	routes      []*url.URL

	mu         sync.Mutex
	clientPort int // -1 until the first start
	srv        *server.Server
}

// NewCluster starts a JetStream cluster of n servers (n ≥ 1; use 3 for
// replicated streams) and waits until the JetStream meta group has a leader
// and every node is current with it. opts, when given, apply to every node
// (Configure sees the cluster and JetStream settings already filled in). The
// test fails if the cluster does not form within 30s.
func NewCluster(t testing.TB, n int, opts ...Options) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: cluster of %d nodes", n)
	}
	// The stores live under one temporary directory, created before the
	// cleanup that stops the servers is registered, so that it is removed
	// only after they stopped.
	c := &Cluster{t: t, name: "natstest-" + randomSuffix(), dir: t.TempDir()}
	if len(opts) > 0 {
		c.opts = opts[0]
	}
	t.Cleanup(c.shutdown)

	// A cluster port reserved and released may be taken by someone else
	// before the node binds it; start again on fresh ports in that case.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = c.start(n); err == nil {
			break
		}
		c.shutdown()
	}
	if err != nil {
		t.Fatalf("natstest: start cluster: %v", err)
	}
	if err := c.waitReady(); err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return c
}

// start creates n nodes on freshly reserved cluster ports and starts them.
func (c *Cluster) start(n int) error {
	ports, err := reservePorts(n)
	if err != nil {
		return err
	}
	routes := make([]*url.URL, n)
	for i, p := range ports {
		routes[i] = &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", p)}
	}
	c.nodes = make([]*node, n)
	for i := range c.nodes {
		dir, err := os.MkdirTemp(c.dir, fmt.Sprintf("n%d-", i))
		if err != nil {
			return fmt.Errorf("store directory: %w", err)
		}
		c.nodes[i] = &node{
			name:        fmt.Sprintf("%s-n%d", c.name, i),
			storeDir:    dir,
			clusterPort: ports[i],
			routes:      routes,
			clientPort:  -1,
		}
	}
	// Start every node before waiting for any: a node's JetStream waits
	// for its peers, and readiness waits for the route listener only.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, nd := range c.nodes {
		wg.Go(func() {
			nd.mu.Lock()
			defer nd.mu.Unlock()
			errs[i] = c.startLocked(nd)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// startLocked starts nd; nd.mu is held.
func (c *Cluster) startLocked(nd *node) error {
	o := &server.Options{
		ServerName: nd.name,
		Host:       "127.0.0.1",
		Port:       nd.clientPort,
		JetStream:  true,
		StoreDir:   nd.storeDir,
		NoLog:      true,
		NoSigs:     true,
		Cluster: server.ClusterOpts{
			Name: c.name,
			Host: "127.0.0.1",
			Port: nd.clusterPort,
		},
		Routes: nd.routes,
	}
	if c.opts.Configure != nil {
		c.opts.Configure(o)
	}
	srv, err := server.NewServer(o)
	if err != nil {
		return fmt.Errorf("node %s: new server: %w", nd.name, err)
	}
	srv.Start() // returns once the listeners run; Shutdown stops them
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("node %s (cluster port %d) not ready after 10s", nd.name, nd.clusterPort)
	}
	nd.srv = srv
	if nd.clientPort <= 0 {
		nd.clientPort = srv.Addr().(*net.TCPAddr).Port
	}
	return nil
}

// Size returns the number of nodes, running or not.
func (c *Cluster) Size() int { return len(c.nodes) }

// URLs returns the client URL of every node, in node order. They stay the
// same across Kill and Restart, so a client given all of them can always
// reach a running node.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		nd.mu.Lock()
		out[i] = fmt.Sprintf("nats://127.0.0.1:%d", nd.clientPort)
		nd.mu.Unlock()
	}
	return out
}

// Server returns node i's running nats-server, or nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	nd := c.node(i)
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.srv
}

// Kill stops node i and waits until it is down; its store is kept for
// Restart. A stopped node stays stopped. This is nats-server's Shutdown,
// which hands off the Raft leaderships the node holds before it closes its
// connections; an embedded server cannot lose power.
func (c *Cluster) Kill(i int) {
	nd := c.node(i)
	nd.mu.Lock()
	defer nd.mu.Unlock()
	stopLocked(nd)
}

// Restart stops node i if it runs, starts it again on the same client and
// cluster ports and the same store, and waits until the JetStream meta group
// has a leader and every running node, node i included, is current with it.
// The test fails if that takes longer than 30s.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	nd := c.node(i)
	nd.mu.Lock()
	stopLocked(nd)
	// The ports were just released; wait until the OS lets them go.
	var err error
	if !poll(10*time.Second, func() bool { return portsFree(nd.clientPort, nd.clusterPort) }) {
		err = fmt.Errorf("ports %d and %d still in use after 10s", nd.clientPort, nd.clusterPort)
	} else {
		err = c.startLocked(nd)
	}
	nd.mu.Unlock()
	if err != nil {
		c.t.Fatalf("natstest: restart node %d: %v", i, err)
	}
	if err := c.waitReady(); err != nil {
		c.t.Fatalf("natstest: restart node %d: %v", i, err)
	}
}

// MetaLeader returns the index of the node that leads the JetStream meta
// group, or -1 if no running node does right now.
func (c *Cluster) MetaLeader() int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// StreamLeader returns the index of the node that leads stream in account
// (empty for the global account "$G"), or -1 if no running node does right
// now, e.g. during an election or for an unknown stream.
func (c *Cluster) StreamLeader(account, stream string) int {
	if account == "" {
		account = server.DEFAULT_GLOBAL_ACCOUNT
	}
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsStreamLeader(account, stream) {
			return i
		}
	}
	return -1
}

// Running returns the indexes of the running nodes.
func (c *Cluster) Running() []int {
	var out []int
	for i := range c.nodes {
		if c.Server(i) != nil {
			out = append(out, i)
		}
	}
	return out
}

func (c *Cluster) node(i int) *node {
	if i < 0 || i >= len(c.nodes) {
		panic(fmt.Sprintf("natstest: node %d of a %d-node cluster", i, len(c.nodes)))
	}
	return c.nodes[i]
}

// waitReady waits until a meta leader sees every node as a peer and every
// running node is current with the meta group.
func (c *Cluster) waitReady() error {
	ok := poll(clusterReadyTimeout, func() bool {
		l := c.MetaLeader()
		if l < 0 {
			return false
		}
		leader := c.Server(l)
		if leader == nil || len(leader.JetStreamClusterPeers()) != len(c.nodes) {
			return false
		}
		for _, i := range c.Running() {
			if s := c.Server(i); s != nil && !s.JetStreamIsCurrent() {
				return false
			}
		}
		return true
	})
	if !ok {
		return fmt.Errorf("cluster %s: no JetStream meta leader with all %d peers current after %s (meta leader: node %d)",
			c.name, len(c.nodes), clusterReadyTimeout, c.MetaLeader())
	}
	return nil
}

// shutdown stops every node.
func (c *Cluster) shutdown() {
	var wg sync.WaitGroup
	for _, nd := range c.nodes {
		wg.Go(func() {
			nd.mu.Lock()
			defer nd.mu.Unlock()
			stopLocked(nd)
		})
	}
	wg.Wait()
}

// stopLocked shuts nd's server down; nd.mu is held.
func stopLocked(nd *node) {
	if nd.srv == nil {
		return
	}
	nd.srv.Shutdown()
	nd.srv.WaitForShutdown()
	nd.srv = nil
}

// reservePorts returns n distinct free loopback TCP ports. They are free
// when it returns, not guaranteed to stay so.
func reservePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// portsFree reports whether every port can be bound on loopback now.
func portsFree(ports ...int) bool {
	for _, p := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		_ = l.Close()
	}
	return true
}

// poll calls cond every 20ms until it holds (true) or timeout passes
// (false).
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}
