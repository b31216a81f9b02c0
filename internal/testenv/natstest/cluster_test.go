package natstest_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/internal/testenv/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// connect returns a JetStream client connected to every URL, closed when
// the test ends.
func connect(t *testing.T, urls []string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// createStream creates a stream, retrying while a busy machine delays the
// meta group's answer.
func createStream(t *testing.T, js jetstream.JetStream, cfg jetstream.StreamConfig) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := js.CreateOrUpdateStream(ctx, cfg)
		require.NoError(c, err)
	}, 30*time.Second, 100*time.Millisecond, "create stream %s", cfg.Name)
}

// publish publishes one message, retrying while the stream elects a leader.
func publish(t *testing.T, js jetstream.JetStream, subject, body string) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.Publish(ctx, subject, []byte(body), jetstream.WithMsgID(body))
		require.NoError(c, err)
	}, 20*time.Second, 50*time.Millisecond, "publish %s", body)
}

func TestClusterSurvivesLosingTheStreamLeader(t *testing.T) {
	t.Parallel()
	c := natstest.NewCluster(t, 3)
	require.Equal(t, 3, c.Size())
	urls := c.URLs()
	require.Len(t, urls, 3)
	require.Len(t, slicesCompact(urls), 3, "distinct client URLs: %v", urls)
	require.Equal(t, []int{0, 1, 2}, c.Running())
	require.GreaterOrEqual(t, c.MetaLeader(), 0, "a meta leader")

	// Each node answers on its own URL and sees the other two as routes.
	for i, u := range urls {
		nc, err := nats.Connect(u)
		require.NoError(t, err)
		require.Equal(t, c.Server(i).ID(), nc.ConnectedServerId(), "URL %d reaches node %d", i, i)
		nc.Close()
	}

	js := connect(t, urls)
	createStream(t, js, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3, Storage: jetstream.FileStorage})
	require.Eventually(t, func() bool { return c.StreamLeader("", "S") >= 0 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, -1, c.StreamLeader("", "NOPE"))
	for i := range 10 {
		publish(t, js, "s.a", fmt.Sprintf("before-%d", i))
	}

	leader := c.StreamLeader("", "S")
	c.Kill(leader)
	require.Nil(t, c.Server(leader))
	require.NotContains(t, c.Running(), leader)
	c.Kill(leader) // a stopped node stays stopped

	// The two survivors elect a new leader and keep accepting writes.
	require.Eventually(t, func() bool {
		l := c.StreamLeader("", "S")
		return l >= 0 && l != leader
	}, 20*time.Second, 20*time.Millisecond, "new stream leader")
	for i := range 10 {
		publish(t, js, "s.a", fmt.Sprintf("after-%d", i))
	}

	// The killed node comes back on the same URL with its store and catches up.
	c.Restart(leader)
	require.NotNil(t, c.Server(leader))
	require.Equal(t, urls, c.URLs(), "URLs are stable across restarts")
	require.Eventually(t, func() bool {
		info, err := streamInfo(js, "S")
		if err != nil || info.State.Msgs != 20 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "three current replicas holding all 20 messages")

	nc, err := nats.Connect(urls[leader])
	require.NoError(t, err)
	defer nc.Close()
	require.Equal(t, c.Server(leader).ID(), nc.ConnectedServerId())
}

func TestClusterRestartOfARunningNode(t *testing.T) {
	t.Parallel()
	c := natstest.NewCluster(t, 3)
	js := connect(t, c.URLs())
	createStream(t, js, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3})
	publish(t, js, "s.a", "one")
	before := c.Server(1)
	c.Restart(1)
	require.NotNil(t, c.Server(1))
	require.NotSame(t, before, c.Server(1), "a new server")
	require.True(t, c.Server(1).JetStreamIsCurrent())
	publish(t, js, "s.a", "two")
	require.Eventually(t, func() bool {
		info, err := streamInfo(js, "S")
		return err == nil && info.State.Msgs == 2
	}, 10*time.Second, 20*time.Millisecond)
}

func TestClusterConfigureApplies(t *testing.T) {
	t.Parallel()
	c := natstest.NewCluster(t, 3, natstest.Options{Configure: func(o *server.Options) {
		o.Username, o.Password = "u", "p"
	}})
	_, err := nats.Connect(c.URLs()[0])
	require.Error(t, err, "anonymous client refused")
	nc, err := nats.Connect(strings.Join(c.URLs(), ","), nats.UserInfo("u", "p"))
	require.NoError(t, err)
	nc.Close()
}

func streamInfo(js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

func slicesCompact(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}
