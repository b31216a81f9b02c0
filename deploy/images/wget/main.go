// Command wget is the HTTP probe of the offline NATS image
// (deploy/images/nats): that image is FROM scratch, with no shell and no
// busybox, yet docker-compose.yml's nats healthcheck runs
//
//	wget -q -O /dev/null http://127.0.0.1:8222/healthz?js-enabled-only=true
//
// as it must in the official nats:*-alpine image. This program accepts that
// subset of wget's command line (-q, -O FILE or -O- for standard output,
// -T SECONDS, and the combined -qO FILE) and GETs one URL: exit 0 for a 2xx
// answer, 1 otherwise. It is not a general wget.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "wget:", err)
		os.Exit(1)
	}
}

// run parses args like busybox wget's -q, -O and -T and fetches the URL.
func run(args []string, stdout, stderr io.Writer) error {
	var (
		url, out string
		quiet    bool
		timeout  = 3 * time.Second
	)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			if url != "" {
				return fmt.Errorf("more than one URL: %q and %q", url, a)
			}
			url = a
			continue
		}
		// Single-letter options, possibly combined (-qO-, -qO FILE).
		for j := 1; j < len(a); j++ {
			switch a[j] {
			case 'q':
				quiet = true
			case 'O', 'T':
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return fmt.Errorf("-%c needs a value", a[j])
					}
					i++
					val = args[i]
				}
				if a[j] == 'O' {
					out = val
				} else {
					secs, err := strconv.Atoi(val)
					if err != nil || secs <= 0 {
						return fmt.Errorf("-T %q: want a positive number of seconds", val)
					}
					timeout = time.Duration(secs) * time.Second
				}
				j = len(a)
			default:
				return fmt.Errorf("unsupported option -%c", a[j])
			}
		}
	}
	if url == "" {
		return fmt.Errorf("no URL")
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var w io.Writer = io.Discard
	switch out {
	case "-":
		w = stdout
	case "", "/dev/null":
	default:
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("server returned %s", resp.Status)
	}
	if !quiet {
		fmt.Fprintf(stderr, "GET %s: %s\n", url, resp.Status)
	}
	return nil
}
