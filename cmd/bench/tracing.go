package main

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpSink is an OTLP/HTTP traces receiver inside the benchmark: it counts
// the export requests, their bytes and the spans in them, and answers 200
// with an empty ExportTraceServiceResponse. It stands for a collector that
// keeps up, so that the tracing line measures the worker's cost of
// recording and exporting spans, not a collector's.
type otlpSink struct {
	srv             *http.Server
	ln              net.Listener
	wg              sync.WaitGroup
	posts, bytes    atomic.Int64
	spans, badPosts atomic.Int64
}

func startOTLPSink() (*otlpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &otlpSink{ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", s.export)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Go(func() { _ = s.srv.Serve(ln) })
	return s, nil
}

// endpoint is the base URL for OTEL_EXPORTER_OTLP_ENDPOINT.
func (s *otlpSink) endpoint() string { return "http://" + s.ln.Addr().String() }

func (s *otlpSink) export(w http.ResponseWriter, r *http.Request) {
	s.posts.Add(1)
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			s.badPosts.Add(1)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	b, err := io.ReadAll(body)
	s.bytes.Add(int64(len(b)))
	var req collectortrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &req)
	}
	if err != nil {
		s.badPosts.Add(1)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			s.spans.Add(int64(len(ss.GetSpans())))
		}
	}
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// close stops the server and waits for it.
func (s *otlpSink) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	s.wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// tracingLine runs the headline's line again with the worker exporting
// every span (OTEL_TRACES_SAMPLER=always_on) to an in-bench OTLP sink.
func (b *bench) tracingLine(ctx context.Context, l *line) (spans, posts, bytes int64, err error) {
	sink, err := startOTLPSink()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("otlp sink: %w", err)
	}
	defer func() {
		if cerr := sink.close(); err == nil && cerr != nil {
			err = fmt.Errorf("otlp sink: %w", cerr)
		}
	}()
	l.env = map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint(),
		"OTEL_TRACES_SAMPLER":         "always_on",
		"OTEL_SERVICE_NAME":           "paystream-worker-bench",
	}
	if err := b.throughput(ctx, l); err != nil {
		return 0, 0, 0, err
	}
	// throughput stopped the worker, which flushed its last batch of
	// spans on the way out.
	if bad := sink.badPosts.Load(); bad > 0 {
		return 0, 0, 0, fmt.Errorf("otlp sink: %d export requests could not be decoded", bad)
	}
	if sink.spans.Load() == 0 {
		return 0, 0, 0, errors.New("tracing line: the worker exported no spans (is tracing built in?)")
	}
	return sink.spans.Load(), sink.posts.Load(), sink.bytes.Load(), nil
}
