// Package natsconn connects paystream's programs to NATS. The worker, the
// publisher and the operator tools all connect through Connect, so that each
// of them authenticates and speaks TLS the same way (docs/security.md): a
// credentials file, a user and password, a token, a private CA and a client
// certificate, alone or together.
//
// Options carries the connection's settings as plain values; the commands
// fill it from the NATS settings of the config package (PAYSTREAM_NATS_URL,
// PAYSTREAM_NATS_CREDS, …). Policy that differs between programs — a worker
// waits for NATS and reconnects for ever, a command-line tool fails fast —
// is passed as nats.go's own options.
package natsconn

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Options say where a connection goes, how it authenticates and what it
// logs. Only URLs is required. Every credential that is set is presented:
// a server may require several at once.
type Options struct {
	// URLs are the servers: nats://, tls://, ws:// or wss:// URLs, tried as
	// nats.go tries them. A URL may carry user:password or a token. At
	// least one is required.
	URLs []string
	// CredsFile is the path of a credentials (.creds) file, holding a user
	// JWT and nkey seed. "" means none.
	CredsFile string
	// User and Password authenticate with a user name and password. ""
	// means none.
	User, Password string
	// Token authenticates with a token. "" means none.
	Token string
	// TLSCA is the path of a PEM file of the CA certificates that verify
	// the server. "" means the system roots. TLS is on when a URL is
	// tls:// or wss://, when the server requires it, or when a TLS file is
	// set.
	TLSCA string
	// TLSCert and TLSKey are the paths of a PEM client certificate and its
	// private key, for a server that requires mutual TLS: both or neither.
	TLSCert, TLSKey string
	// Name is the client name that the server shows in its monitoring,
	// e.g. "paystream-worker w-1". "" means none.
	Name string
	// Logger receives the connection's disconnects (warn), reconnects and
	// close (info), with component=nats. The zero Logger logs nothing.
	Logger zerolog.Logger
	// ClosedFunc, when set, is called once the connection is closed for
	// good: after Close or Drain, or when nats.go gives up reconnecting.
	ClosedFunc func()
	// CoalesceWrites gathers what many goroutines send at about the same
	// time into one write to the socket (coalesce.go), instead of about one
	// write per publish or ack: for a process that publishes and acks from
	// hundreds of goroutines at once, such as the worker. It dials with the
	// settings of the options passed to Connect (coalesceWrites says which);
	// with a nats.SetCustomDialer among them, that dialer is used and the
	// connection does not coalesce.
	CoalesceWrites bool
}

// mask replaces secrets in the URLs that errors quote.
const mask = "xxxxx"

// Connect connects to NATS with o, then with extra: nats.go options such as
// a reconnect policy, applied after o's own and so able to change them (an
// extra ClosedHandler replaces the one that calls ClosedFunc). The caller
// owns the connection and closes or drains it.
//
// Errors name the servers with their passwords and tokens masked, and never
// quote a secret: an invalid Options (no URL, a URL that does not parse, a
// client certificate without its key) or nats.go's reason for failing.
func Connect(o Options, extra ...nats.Option) (*nats.Conn, error) {
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	nc, err := nats.Connect(strings.Join(o.URLs, ","), o.connectOptions(extra)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(o.URLs), err)
	}
	return nc, nil
}

// check refuses the Options that nats.go would refuse with a message that
// may quote a secret (url.Parse quotes its input), or not at all.
func (o Options) check() error {
	if len(o.URLs) == 0 {
		return errors.New("no server URL")
	}
	var errs []error
	for i, raw := range o.URLs {
		if _, err := url.Parse(raw); err != nil {
			errs = append(errs, fmt.Errorf("URL %d of %d cannot be parsed as a URL", i+1, len(o.URLs)))
		}
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		errs = append(errs, errors.New("a TLS client certificate needs its key, and a key its certificate"))
	}
	return errors.Join(errs...)
}

// options turns o into nats.go options.
func (o Options) options() []nats.Option {
	log := o.Logger.With().Str("component", "nats").Logger()
	opts := []nats.Option{
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn().AnErr("cause", err).Msg("nats disconnected; reconnecting")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedServerId()).Msg("nats reconnected")
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			log.Info().Msg("nats connection closed")
			if o.ClosedFunc != nil {
				o.ClosedFunc()
			}
		}),
	}
	if o.Name != "" {
		opts = append(opts, nats.Name(o.Name))
	}
	if o.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	return opts
}

// connectOptions are o's options, then extra, then (with CoalesceWrites)
// the coalescing dialer, which takes its settings from the others.
func (o Options) connectOptions(extra []nats.Option) []nats.Option {
	opts := append(o.options(), extra...)
	if o.CoalesceWrites {
		opts = append(opts, coalesceWrites())
	}
	return opts
}

// redactURLs returns urls comma-separated, each with its password (of
// user:password) or token (a lone user name) masked as "xxxxx", for
// messages and logs. A URL that does not parse is replaced whole.
func redactURLs(urls []string) string {
	out := make([]string, len(urls))
	for i, raw := range urls {
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			out[i] = "(unparseable URL)"
		case u.User == nil:
			out[i] = raw
		default:
			if _, ok := u.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), mask)
			} else {
				u.User = url.User(mask)
			}
			out[i] = u.String()
		}
	}
	return strings.Join(out, ",")
}
